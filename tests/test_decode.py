"""Thinker decoding (prefill + step) on a random tiny model: the streamed logits and hidden states equal
a whole-sequence forward of the same tokens; the format's grammar holds at every step; positions are
explicit (nothing is read from or written to the module).

    .venv/bin/python -m pytest tests/test_decode.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from models.decode import prefill, step
from models.format import Role, Schedule, Slot, cursor_for, deinterleave
from models.talker import thinker_states
from models.tokenizer import control_ids, text_prompt

MIN_POSITIONS = 40


def run(thinker, prompt, fmt, ids, n, schedule=Schedule(2, 3), temperature=0.0, seed=0, **kw):
    st = prefill(thinker, prompt, cursor_for(fmt, schedule, ids), max_new_tokens=n, temperature=temperature,
                 generator=torch.Generator().manual_seed(seed), **kw)
    out = []
    while not st.done:
        out.append(step(thinker, st))
    return out


@pytest.mark.parametrize("fmt", ["tis", "think_first"])
def test_streamed_logits_and_hidden_equal_whole_sequence(tokenizer, tiny_model, fmt):
    ids = control_ids(tokenizer)
    prompt = text_prompt(tokenizer, "What is 2 plus 2?")
    steps = run(tiny_model.thinker, prompt, fmt, ids, 60)
    gen = [s.token for s in steps]
    assert len(gen) >= MIN_POSITIONS
    x = torch.tensor([prompt + gen])
    with torch.no_grad():  # one forward of the whole sequence, with the model's own position ids
        logits = tiny_model.thinker(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
    hidden, _ = thinker_states(tiny_model, input_ids=x, attention_mask=torch.ones_like(x))
    tiny_model.thinker.model.rope_deltas = None  # that forward set them; the steps below must not care
    cur = cursor_for(fmt, Schedule(2, 3), ids)
    for s in steps:
        torch.testing.assert_close(s.logits, logits[len(prompt) + s.index - 1], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(s.hidden, hidden[0, len(prompt) + s.index], rtol=1e-4, atol=1e-4)
        forced = cur.forced_token()
        if forced is None:  # a chosen token is the argmax over the ids the format allows
            lg = logits[len(prompt) + s.index - 1].clone()
            lg[sorted(cur.banned())] = float("-inf")
            assert int(lg.argmax()) == s.token, s.index
        assert s.forced == (forced is not None)
        assert cur.advance(s.token) == s.placed


@pytest.mark.parametrize("fmt", ["tis", "think_first"])
def test_grammar_holds_when_sampling(tokenizer, tiny_model, fmt):
    ids = control_ids(tokenizer)
    s = Schedule()
    steps = run(tiny_model.thinker, text_prompt(tokenizer, "What is 5 times 3?"), fmt, ids, 80, s, temperature=1.0)
    assert len(steps) >= MIN_POSITIONS or deinterleave([x.token for x in steps], ids, s, fmt).ended
    for e in steps:
        if fmt == "tis":
            pos = e.index % s.block_len
            if pos == 0:
                assert e.token == ids.speak and e.forced and e.placed.role is Role.CONTROL
            elif pos == s.speak + 1:
                assert e.token == ids.think and e.forced
            elif pos <= s.speak:
                assert e.placed.role is Role.RESPONSE and e.token not in (ids.speak, ids.think)
            else:
                assert e.placed.role is Role.REASONING and e.token not in (ids.speak, ids.think, ids.eos)
            assert e.placed.block == e.index // s.block_len
        elif e.index == 0:
            assert e.token == ids.think and e.forced and not e.placed.target
    split = deinterleave([e.token for e in steps], ids, s, fmt)  # always splits cleanly
    assert split.ended == (steps[-1].token == ids.eos)


def test_seeded_sampling_reproducible(tokenizer, tiny_model):
    ids = control_ids(tokenizer)
    p = text_prompt(tokenizer, "What is 5 times 3?")
    toks = lambda seed: [s.token for s in run(tiny_model.thinker, p, "tis", ids, 40, temperature=1.0, seed=seed)]  # noqa: E731
    assert toks(1) == toks(1) != toks(2)


def test_last_position_without_hidden(tokenizer, tiny_model):
    ids = control_ids(tokenizer)
    st = prefill(tiny_model.thinker, text_prompt(tokenizer, "Hi?"), cursor_for("tis", Schedule(), ids),
                 max_new_tokens=3)
    a, b = step(tiny_model.thinker, st), step(tiny_model.thinker, st, need_hidden=False)
    assert a.hidden is not None and b.hidden is not None  # not the last: its forward is needed anyway
    c = step(tiny_model.thinker, st, need_hidden=False)
    assert st.done and c.hidden is None and st.logits is None and st.lm.length(st.slot) == st.prompt_len + 2
    with pytest.raises(RuntimeError, match="done"):
        step(tiny_model.thinker, st)


def test_forced_pads_after_reasoning(tokenizer, tiny_model):
    """Once a think slot holds a pad, the rest of the reasoning stream is forced pads."""
    ids = control_ids(tokenizer)
    st = prefill(tiny_model.thinker, text_prompt(tokenizer, "Hi?"), cursor_for("tis", Schedule(1, 3), ids),
                 max_new_tokens=40)
    bias = torch.zeros_like(st.logits)
    bias[ids.pad] = 1e4  # make the model want a pad everywhere it may hold one
    steps = []
    while not st.done:
        st.logits = st.logits + bias
        steps.append(step(tiny_model.thinker, st))
    think = [s for s in steps if s.placed.role is Role.REASONING]
    assert think and all(s.token == ids.pad for s in think) and all(s.forced for s in think[1:])
    assert not think[0].forced  # the first pad was the model's choice


def test_bad_requests(tokenizer, tiny_model):
    ids = control_ids(tokenizer)
    with pytest.raises(ValueError, match="empty prompt"):
        prefill(tiny_model.thinker, [], cursor_for("tis", Schedule(), ids), max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        prefill(tiny_model.thinker, [1, 2], cursor_for("tis", Schedule(), ids), max_new_tokens=0)


def test_decoding_knows_no_format():
    """The grammar lives in models/format.py only: decoding and the talker never compare to a format name."""
    for f in ("models/decode.py", "models/talker.py"):
        tree = ast.parse((Path(__file__).resolve().parents[1] / f).read_text())
        names = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in ("tis", "think_first")]
        slots = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in Slot.__members__]
        assert not names and not slots, f


def _copy_with(model, tokenizer, turn_on, **kw):
    """A copy of ``model`` with ``turn_on(model, speak, think, **kw)`` applied (models.streams)."""
    import copy

    m = copy.deepcopy(model)
    ids = control_ids(tokenizer)
    turn_on(m, ids.speak, ids.think, **kw)
    return m


@pytest.fixture(scope="module")
def marked_model(tokenizer, tiny_model):
    from models.streams import enable

    return _copy_with(tiny_model, tokenizer, enable)


@pytest.mark.parametrize("fmt", ["tis", "think_first"])
def test_stream_markers_stream_as_the_whole_sequence_computes_them(tokenizer, tiny_model, marked_model, fmt):
    """models.streams: a training forward adds each position's marker (its last control token's row) in the
    embedding's hook; a decoding step gets it from the request's state. Both must give the same logits, and
    the markers must change them (the model sees which stream a token is in)."""
    ids = control_ids(tokenizer)
    prompt = text_prompt(tokenizer, "What is 47 plus 38?")
    steps = run(marked_model.thinker, prompt, fmt, ids, 60)
    gen = [s.token for s in steps]
    x = torch.tensor([prompt + gen])
    with torch.no_grad():
        whole = marked_model.thinker(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
        plain = tiny_model.thinker(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
    for s in steps:
        torch.testing.assert_close(s.logits, whole[len(prompt) + s.index - 1], rtol=1e-4, atol=1e-4)
    first_ctrl = len(prompt) + next(s.index for s in steps if s.token in (ids.speak, ids.think))
    torch.testing.assert_close(whole[: first_ctrl], plain[: first_ctrl])  # no marker before the first control
    assert (whole[first_ctrl:] - plain[first_ctrl:]).abs().max() > 1e-3


def test_stream_markers_are_kept_by_a_saved_checkpoint(tokenizer, marked_model, tmp_path):
    from models.omni import load_checkpoint, save
    from models.streams import last_control, marker_ids

    save(marked_model, tmp_path / "model")
    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    loaded, _ = load_checkpoint(tmp_path)
    ids = control_ids(tokenizer)
    assert marker_ids(loaded) == (ids.speak, ids.think)
    x = torch.tensor([text_prompt(tokenizer, "What is 2 plus 2?") + [ids.speak, 40, ids.think, 41, 42, ids.speak, 43]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.thinker(input_ids=x).logits, marked_model.thinker(input_ids=x).logits)
    m = last_control(x, (ids.speak, ids.think))[0, -7:].tolist()
    assert m == [ids.speak, ids.speak, ids.think, ids.think, ids.think, ids.speak, ids.speak]


def test_training_with_stream_markers_is_reproducible(tokenizer, marked_model):
    """Two trainings of the same marked model on the same batch end with the same weights, bit for bit (as the
    plain model's do). With the marker rows taken by indexing, the backward's accumulate summed their gradients
    in thread order: two CPU runs of the same pipeline differed from the first step, and so did the session
    tests' fixture (whose talker then ended anywhere from 0.04 s to 8 s)."""
    import copy

    ids = control_ids(tokenizer)
    rows = [text_prompt(tokenizer, "What is 47 plus 38?") + [ids.think] + [40 + i % 9 for i in range(30)] +
            sum(([ids.speak, 50 + i, 51 + i, ids.think] + [60 + j for j in range(8)] for i in range(12)), [])] * 6

    def train():
        m = copy.deepcopy(marked_model)
        x = torch.tensor(rows)
        opt = torch.optim.AdamW(m.thinker.parameters(), lr=4e-3)
        for _ in range(4):
            logits = m.thinker(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in m.thinker.parameters()])

    first = train()
    for _ in range(3):
        assert torch.equal(train(), first)


@pytest.fixture(scope="module")
def masked_model(tokenizer, marked_model):
    """The marked model with the stream mask too (models.streams): the reasoning never reads the response."""
    from models.streams import enable_mask

    return _copy_with(marked_model, tokenizer, enable_mask)


@pytest.fixture(scope="module")
def clocked_model(tokenizer, marked_model):
    """The stream mask with the reasoning's own rope clock."""
    from models.streams import enable_mask

    return _copy_with(marked_model, tokenizer, enable_mask, clock=True)


def _masked_logits(model, x, attention_mask=None):
    from models.losses import thinker_attention, thinker_position_ids

    batch = {"input_ids": x, "attention_mask": torch.ones_like(x) if attention_mask is None else attention_mask}
    with torch.no_grad():
        return model.thinker(input_ids=x, attention_mask=thinker_attention(model, batch),
                             position_ids=thinker_position_ids(model, batch), use_cache=False).logits


def test_stream_clock_numbers_the_reasoning_without_the_speak_blocks(tokenizer, clocked_model):
    """With the clock, the prompt and every position outside the response stream run 0, 1, 2, ... (a speak block
    leaves no gap in the reasoning's positions); a response position keeps its index in the sequence."""
    from models.losses import thinker_position_ids

    ids = control_ids(tokenizer)
    x = torch.tensor([[5, 6, ids.speak, 50, 51, ids.think, 60, 61, 62, ids.speak, 52, 53, ids.think, 63, 64]])
    pos = thinker_position_ids(clocked_model, {"input_ids": x, "attention_mask": torch.ones_like(x)})
    assert pos.shape == (3, 1, 15)
    assert pos[0, 0].tolist() == [0, 1, 2, 3, 4, 2, 3, 4, 5, 9, 10, 11, 6, 7, 8]


def test_stream_mask_hides_the_response_from_the_reasoning_only(tokenizer, masked_model, marked_model):
    """A training forward with the stream mask: what a reasoning position predicts does not change when the
    response tokens before it change (without the mask it does); response positions still read the reasoning;
    the prompt and a think-first layout (reasoning before the first <|speak|>) are the unmasked model's."""
    ids = control_ids(tokenizer)
    prompt = text_prompt(tokenizer, "What is 47 plus 38?")
    blocks = sum(([ids.speak, 50 + i, 51 + i, ids.think] + [60 + j for j in range(8)] for i in range(6)), [])
    x = torch.tensor([prompt + blocks])
    y = x.clone()
    n = len(prompt)
    said = [n + 12 * i + k for i in range(6) for k in (1, 2)]  # the response tokens of every block
    y[0, said] = 70
    think = [n + 12 * i + k for i in range(6) for k in range(3, 12)]  # <|think|> and the reasoning after it
    speak = [n + 12 * i + k for i in range(1, 6) for k in (0, 1, 2)]  # a later block's <|speak|> and response
    a, b = _masked_logits(masked_model, x)[0], _masked_logits(masked_model, y)[0]
    torch.testing.assert_close(a[think], b[think], rtol=1e-5, atol=1e-5)
    assert (a[speak] - b[speak]).abs().max() > 1e-3  # the response reads what was said
    plain_a, plain_b = _masked_logits(marked_model, x)[0], _masked_logits(marked_model, y)[0]
    assert (plain_a[think] - plain_b[think]).abs().max() > 1e-3  # without the mask the reasoning reads it too
    torch.testing.assert_close(a[:n + 1], plain_a[:n + 1], rtol=1e-5, atol=1e-5)
    z = torch.tensor([prompt + [ids.think] + [60 + j for j in range(20)] + [ids.speak, 50, 51, 52]])
    torch.testing.assert_close(_masked_logits(masked_model, z), _masked_logits(marked_model, z), rtol=1e-5, atol=1e-5)


def test_stream_mask_pads_a_batch_as_one_row_alone(tokenizer, masked_model):
    """Right-padded rows of a training batch get the logits each row gets alone."""
    ids = control_ids(tokenizer)
    prompt = text_prompt(tokenizer, "What is 7 plus 8?")
    long = prompt + sum(([ids.speak, 50 + i, 51, ids.think] + [60 + j for j in range(8)] for i in range(4)), [])
    short = long[:-17]
    x = torch.tensor([long, short + [tokenizer.pad_token_id] * 17])
    am = torch.tensor([[1] * len(long), [1] * len(short) + [0] * 17])
    both = _masked_logits(masked_model, x, am)
    torch.testing.assert_close(both[0], _masked_logits(masked_model, x[:1])[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[1, :len(short)], _masked_logits(masked_model, x[1:, :len(short)])[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clock", [False, True])
@pytest.mark.parametrize("fmt", ["tis", "think_first"])
def test_stream_mask_streams_as_the_whole_sequence_computes_it(tokenizer, masked_model, clocked_model, fmt, clock):
    """Decoding with the stream mask (the runner keeps each cached position's stream) gives the logits and
    hidden states of one masked forward of the whole sequence, and greedy picks its argmax; several requests
    stepped together in one runner, rows moving as slots are freed, decode as each does alone."""
    from models.decode import step_batch
    from models.runner import SlotLM

    ids = control_ids(tokenizer)
    masked_model = clocked_model if clock else masked_model
    questions = ["What is 47 plus 38?", "What is 9 times 6?", "Ana has 12 pens. She gets 5 more."]
    alone = {}
    for q in questions:
        prompt = text_prompt(tokenizer, q)
        steps = run(masked_model.thinker, prompt, fmt, ids, 50)
        gen = [s.token for s in steps]
        x = torch.tensor([prompt + gen])
        whole = _masked_logits(masked_model, x)[0]
        for s in steps:
            torch.testing.assert_close(s.logits, whole[len(prompt) + s.index - 1], rtol=1e-4, atol=1e-4)
        alone[q] = steps
    lm = SlotLM.for_thinker(masked_model.thinker, slots=2)
    first = prefill(lm, text_prompt(tokenizer, "What is 1 plus 1?"), cursor_for(fmt, Schedule(2, 3), ids),
                    max_new_tokens=50)
    states = [prefill(lm, text_prompt(tokenizer, q), cursor_for(fmt, Schedule(2, 3), ids), max_new_tokens=50)
              for q in questions]
    got = {q: [] for q in questions}
    for i in range(30):
        if i == 17:  # the rows after it move down: their streams must move with their keys
            lm.free(first.slot)
        live = [(q, s) for q, s in zip(questions, states) if not s.done]
        outs = step_batch([s for _, s in live] + ([first] if i < 17 else []))
        for (q, _), out in zip(live, outs):
            got[q].append(out)
    while any(not s.done for s in states):
        live = [(q, s) for q, s in zip(questions, states) if not s.done]
        for (q, _), out in zip(live, step_batch([s for _, s in live])):
            got[q].append(out)
    for q in questions:
        assert [s.token for s in got[q]] == [s.token for s in alone[q]], q
        for a, b in zip(got[q], alone[q]):
            torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)


def test_stream_mask_and_clock_are_kept_by_a_saved_checkpoint(tokenizer, clocked_model, tmp_path):
    """The mask and the clock live in the thinker's config: a loaded checkpoint trains and decodes with them."""
    from models.omni import load_checkpoint, save
    from models.runner import SlotLM
    from models.streams import clock_of, mask_ids

    save(clocked_model, tmp_path / "model")
    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    loaded, _ = load_checkpoint(tmp_path)
    ids = control_ids(tokenizer)
    assert mask_ids(loaded) == (ids.speak, ids.think) and clock_of(loaded)
    lm = SlotLM.for_thinker(loaded.thinker, slots=1)
    assert lm.mask_ids == (ids.speak, ids.think) and lm.clock
    x = torch.tensor([text_prompt(tokenizer, "What is 2 plus 2?") + [ids.speak, 40, 41, ids.think, 42, 43, ids.speak, 44]])
    torch.testing.assert_close(_masked_logits(loaded, x), _masked_logits(clocked_model, x))

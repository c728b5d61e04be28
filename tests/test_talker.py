"""Talker tests on a tiny Qwen2.5-Omni: layout, loss, frozen thinker, learning, response-only visibility,
and the streaming talker against the teacher-forced layout.

    .venv/bin/python -m pytest tests/test_talker.py -q
"""

from __future__ import annotations

import pytest
import torch

from models.format import Role, Schedule, build
from models.omni import TinyDims, build_tiny
from models.talker import (
    ROLE_PAD,
    TalkerStream,
    build_talker_inputs,
    codebook_mask,
    generate_codes,
    talker_forward,
    talker_loss,
    talker_targets,
    thinker_states,
)
from models.tokenizer import control_ids, encode, text_prompt, train_bpe

TEXTS = ["Tom has three apples and buys twelve more.", "three plus twelve is fifteen", "The answer is 15."] * 20
SIZES = (8, 16, 16)  # a toy 3-codebook codec: 40 ids
N = len(SIZES)


def batch(tok, layouts):
    t = max(len(l) for l in layouts)
    input_ids = torch.tensor([l.input_ids + [tok.pad_token_id] * (t - len(l)) for l in layouts])
    am = torch.tensor([[1] * len(l) + [0] * (t - len(l)) for l in layouts])
    roles = torch.tensor([[int(r) for r in l.roles] + [ROLE_PAD] * (t - len(l)) for l in layouts])
    return input_ids, am, roles


@pytest.fixture(scope="module")
def setup():
    tok = train_bpe(TEXTS, vocab_size=400)
    model = build_tiny(TinyDims(), tok)
    model.thinker.requires_grad_(False)  # the talker stage trains only the talker
    ids = control_ids(tok)
    layouts = [
        build("tis", text_prompt(tok, "Tom has three apples."), encode(tok, "The answer is 15."),
              encode(tok, "three plus twelve is fifteen"), ids, Schedule(2, 8), delay_eos=True),
        build("tis", text_prompt(tok, "How many?"), encode(tok, "Fifteen."), encode(tok, "3+12=15"), ids,
              Schedule(2, 8), delay_eos=True),
    ]
    input_ids, am, roles = batch(tok, layouts)
    hidden, embeds = thinker_states(model, input_ids=input_ids, attention_mask=am)
    g = torch.Generator().manual_seed(0)
    codes = [flat_codes(n, g) for n in (10, 7)]  # whole frames
    return model, tok, hidden, embeds, roles, codes, layouts


def flat_codes(frames: int, g) -> list[int]:
    """Valid flat ids: frame by frame, codebook k in [offset_k, offset_k + size_k)."""
    out = []
    for _ in range(frames):
        off = 0
        for size in SIZES:
            out.append(off + int(torch.randint(0, size, (1,), generator=g)))
            off += size
    return out


def test_loss_finite_and_only_talker_learns(setup):
    model, _, hidden, embeds, roles, codes, _ = setup
    assert not hidden.requires_grad  # frozen thinker: states carry no graph
    model.zero_grad()
    loss = talker_loss(model, hidden, embeds, roles, codes, codebooks=N)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in model.thinker.parameters())
    assert all(p.grad is None for p in model.token2wav.parameters())
    got = [n for n, p in model.talker.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any("thinker_to_talker_proj" in n for n in got) and any("codec_head" in n for n in got)
    model.zero_grad()


def test_sum_is_mean_times_targets(setup):
    model, _, hidden, embeds, roles, codes, _ = setup
    with torch.no_grad():
        mean = talker_loss(model, hidden, embeds, roles, codes, codebooks=N)
        total = talker_loss(model, hidden, embeds, roles, codes, reduction="sum", codebooks=N)
    n_targets = sum(talker_targets(len(c)) for c in codes)
    assert n_targets == sum(len(c) + 1 for c in codes)
    torch.testing.assert_close(total, mean * n_targets)
    with pytest.raises(ValueError, match="reduction"):
        talker_loss(model, hidden, embeds, roles, codes, reduction="none", codebooks=N)


def test_layout_reads_one_response_position_per_frame(setup):
    """Step s reads reply[s // n] at a frame's first codebook, the text pad elsewhere; the reply starts
    at the first RESPONSE position (prompt and the leading control never reach the talker)."""
    model, _, hidden, embeds, roles, codes, layouts = setup
    x = build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N)
    t = model.talker
    emb = model.thinker.get_input_embeddings().weight
    codec_emb = t.get_input_embeddings().weight
    pad = emb[t.text_pad_token]
    r0 = roles[0]
    first = int((r0 == int(Role.RESPONSE)).nonzero()[0])
    assert layouts[0].roles[first - 1] is Role.CONTROL  # <|speak|> just before it
    lab = x.labels[0]
    assert lab[0] == -100 and lab[1 : 1 + len(codes[0])].tolist() == codes[0]
    assert int(lab[1 + len(codes[0])]) == t.codec_eos_token
    torch.testing.assert_close(x.inputs_embeds[0, 0], emb[t.text_bos_token] + codec_emb[t.codec_pad_token])
    for s in range(len(codes[0]) + 1):
        prev = t.codec_bos_token if s == 0 else codes[0][s - 1]
        text = x.inputs_embeds[0, 1 + s] - codec_emb[prev]
        pos = first + s // N
        if s % N:
            want = pad
        elif r0[pos] == int(Role.RESPONSE):
            want = hidden[0, pos] + embeds[0, pos]
        else:
            want = pad  # a think slot, control or think pad inside the reply
        torch.testing.assert_close(text, want, msg=f"step {s}")
    # The shorter sample is right-padded and masked.
    assert int(x.attention_mask[1].sum()) == 1 + talker_targets(len(codes[1]))


def test_codes_ignore_prompt_controls_and_reasoning(setup):
    """Two real layouts with other prompts (other lengths), other reasoning tokens and other states at
    every non-response position, but the same response states: same loss, same generated codes."""
    model, tok, hidden, embeds, roles, codes, layouts = setup
    ids = control_ids(tok)
    a = layouts[0]
    b = build("tis", text_prompt(tok, "A much longer question about apples and oranges, asked twice?"),
              encode(tok, "The answer is 15."), encode(tok, "twelve plus three gives fifteen"), ids,
              Schedule(2, 8), delay_eos=True)
    ra, rb = [int(r) for r in a.roles], [int(r) for r in b.roles]
    assert b.prompt_len != a.prompt_len
    assert [r for r in ra if r != Role.PROMPT] == [r for r in rb if r != Role.PROMPT]  # same body roles
    assert a.input_ids[a.prompt_len:] != b.input_ids[b.prompt_len:]  # reasoning tokens differ
    ha, ea = hidden[:1, : len(a)], embeds[:1, : len(a)]
    g = torch.Generator().manual_seed(1)
    hb = torch.randn(1, len(b), ha.shape[-1], generator=g)  # prompt, controls, reasoning: anything
    eb = torch.randn(1, len(b), ha.shape[-1], generator=g)
    resp_a = [i for i, r in enumerate(ra) if r == Role.RESPONSE]
    resp_b = [i for i, r in enumerate(rb) if r == Role.RESPONSE]
    hb[0, resp_b], eb[0, resp_b] = ha[0, resp_a], ea[0, resp_a]
    with torch.no_grad():
        la = talker_loss(model, ha, ea, torch.tensor([ra]), codes[:1], codebooks=N)
        lb = talker_loss(model, hb, eb, torch.tensor([rb]), codes[:1], codebooks=N)
    assert torch.equal(la, lb)
    kw = dict(max_new_tokens=30, codebook_sizes=SIZES)
    got = generate_codes(model, ha, ea, [ra], **kw)
    assert len(got) >= 2 * N and got == generate_codes(model, hb, eb, [rb], **kw)
    # ...while a response position does move them.
    hc = hb.clone()
    hc[0, resp_b[0]] += 5.0
    with torch.no_grad():
        assert not torch.allclose(talker_loss(model, hc, eb, torch.tensor([rb]), codes[:1], codebooks=N), lb)


def test_loss_falls_in_20_steps(setup):
    model, _, hidden, embeds, roles, codes, _ = setup
    state = {k: v.clone() for k, v in model.talker.state_dict().items()}
    opt = torch.optim.AdamW(model.talker.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = talker_loss(model, hidden[:1], embeds[:1], roles[:1], codes[:1], codebooks=N)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"talker loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.6 * losses[0]
    model.talker.load_state_dict(state)


def one(setup, i=0):
    model, _, hidden, embeds, roles, _, layouts = setup
    n = len(layouts[i])
    return hidden[i : i + 1, :n], embeds[i : i + 1, :n], roles[i : i + 1, :n]


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_streamed_logits_equal_teacher_forced(setup, temperature):
    """TalkerStream fed position by position, stepping whenever a step is due, gives the logits of the
    training layout at every step (greedy and sampled), and each frame waits for its reply position."""
    model = setup[0]
    h, e, r = one(setup)
    stream = TalkerStream(model, SIZES, temperature=temperature, generator=torch.Generator().manual_seed(3),
                          max_codes=10 * N)
    stream.allowed[:, model.talker.codec_eos_token] = False  # a random talker may end at once: compare 10 frames
    roles = r[0].tolist()
    first = roles.index(int(Role.RESPONSE))
    logits = []
    for i, role in enumerate(roles):
        stream.push(role, h[0, i], e[0, i])
        while stream.ready():
            # frame f needs the reply position first + f: it is here, and nothing later is.
            assert stream.frame <= i - first
            stream.step()
            logits.append(stream.logits)
    stream.finish()
    while stream.ready():
        stream.step()
        logits.append(stream.logits)
    ids = stream.codes
    assert len(ids) == 10 * N and len(logits) == len(ids)
    for k, i in enumerate(ids):  # each step emitted an id of its own codebook
        off = sum(SIZES[: k % N])
        assert off <= i < off + SIZES[k % N]
    x = build_talker_inputs(model, h, e, r, [ids], codebooks=N)
    with torch.no_grad():
        tf = talker_forward(model, x)[0]
    for k in range(len(ids)):
        torch.testing.assert_close(logits[k], tf[1 + k], rtol=1e-4, atol=1e-4)
    if temperature == 0:  # generate_codes is the same stream with the whole sequence pushed first
        whole = generate_codes(model, h, e, r, max_new_tokens=10 * N, codebook_sizes=SIZES)
        assert len(whole) >= N and whole == ids[: len(whole)]


def test_codebook_mask():
    m = [codebook_mask(k, 50, 47, SIZES) for k in range(4)]
    assert m[0][:8].all() and not m[0][8:40].any() and m[0][47]  # f0-like first codebook + eos
    assert m[1][8:24].all() and m[1].sum() == 16 and not m[1][47]
    assert m[3].equal(m[0])


def test_generate_stops_at_eos(setup):
    model = setup[0]
    t = model.talker
    saved = t.codec_head.weight.data.clone()
    t.codec_head.weight.data.zero_()
    t.codec_head.weight.data[t.codec_eos_token] = 1.0  # eos always wins once allowed
    try:
        h, e, r = one(setup)
        assert generate_codes(model, h, e, r, codebook_sizes=SIZES) == []
    finally:
        t.codec_head.weight.data.copy_(saved)


def test_stream_without_response_speaks_nothing(setup):
    model = setup[0]
    s = TalkerStream(model, SIZES)
    h = torch.zeros(model.thinker.config.text_config.hidden_size)
    for role in (Role.CONTROL, Role.REASONING, Role.REASONING):
        s.push(role, h, h)
        assert not s.ready()
    s.finish()
    assert s.done and not s.ready() and s.codes == []
    with pytest.raises(RuntimeError, match="after finish"):
        s.push(Role.RESPONSE, h, h)
    with pytest.raises(RuntimeError, match="not due"):
        s.step()


def test_errors(setup):
    model, _, hidden, embeds, roles, codes, _ = setup
    with pytest.raises(ValueError, match="below the talker's control ids"):
        talker_loss(model, hidden, embeds, roles, [[model.talker.codec_pad_token], codes[1]], codebooks=N)
    no_resp = roles.clone()
    no_resp[0][no_resp[0] == int(Role.RESPONSE)] = int(Role.REASONING)
    with pytest.raises(ValueError, match="no RESPONSE positions"):
        talker_loss(model, hidden, embeds, no_resp, codes, codebooks=N)
    with pytest.raises(ValueError, match="roles has shape"):
        talker_loss(model, hidden, embeds, roles[:, :-1], codes, codebooks=N)
    with pytest.raises(ValueError, match="codebooks"):
        talker_loss(model, hidden, embeds, roles, codes, codebooks=0)
    with pytest.raises(ValueError, match="one sample"):
        generate_codes(model, hidden, embeds, roles, codebook_sizes=SIZES)
    with pytest.raises(ValueError, match="codebook_sizes"):
        generate_codes(model, hidden[:1], embeds[:1], roles[:1])


# --- the duration pace: each spoken token read for as long as it takes to say -------------------------


def test_token_seconds_estimate_each_token(setup):
    from models.talker import PAUSE_SECONDS, SECONDS_PER_DIGIT, SECONDS_PER_LETTER, token_seconds

    tok = setup[1]
    sec = token_seconds(tok)
    assert sec.shape == (len(tok),)
    assert all(float(sec[i]) == 0 for i in tok.all_special_ids)  # controls, pads, eos say nothing
    by_text = {tok.decode([i]): float(sec[i]) for i in encode(tok, "The answer is 15.")}
    assert by_text["1"] == pytest.approx(SECONDS_PER_DIGIT)
    assert by_text["."] == pytest.approx(PAUSE_SECONDS["."])
    words = {t: s for t, s in by_text.items() if t.strip().isalpha()}
    assert words and all(s == pytest.approx(SECONDS_PER_LETTER * len(t.strip())) for t, s in words.items())


def test_token_texts_decode_once_and_follow_a_grown_vocabulary(setup):
    """The talker stage asks for every id's text several times; it is decoded once per tokenizer, a copy is
    returned (a caller's edit does not leak), and a tokenizer that grew is decoded again."""
    import copy

    from models.talker import token_seconds, token_texts

    tok = copy.deepcopy(setup[1])
    calls = []
    real = tok.batch_decode
    tok.batch_decode = lambda *a, **k: calls.append(1) or real(*a, **k)
    first = token_texts(tok)
    first[5] = "edited"
    assert token_texts(tok)[5] != "edited" and len(calls) == 1
    token_seconds(tok)
    assert len(calls) == 1
    tok.add_tokens(["zzzyx"])
    grown = token_texts(tok)
    assert len(calls) == 2 and len(grown) == len(tok) and grown[-1] == "zzzyx"


def test_frame_bounds_spread_frames_or_follow_the_rate():
    from models.talker import frame_bounds

    w = torch.tensor([0.2, 0.1, 0.46, 0.24])
    assert frame_bounds(w, frames=20) == [4, 6, 15, 20]  # every frame is a token's, the last ends at 20
    assert frame_bounds(w, frames_per_second=50.0) == [10, 15, 38, 50]


def toy_learned(tok) -> dict:
    """A ``learn_seconds``-shaped table far from the estimate: odd ids said at half their estimate, even ids
    at 1.7x, numbers at 1.3x their words."""
    from models.talker import token_seconds

    est = token_seconds(tok)
    return {"ratio": 0.9, "number_scale": 1.3,
            "seconds": {str(i): float(est[i]) * (0.5 if i % 2 else 1.7) for i in range(len(est)) if est[i] > 0}}


@pytest.fixture(scope="module", params=["digits", "words", "learned"],
                ids=["digits", "numbers-as-words", "learned-seconds"])
def paced(setup, request):
    """The setup's model with the duration pace (its own copy; a number's digits at 0.45 s each, or sharing
    the time of its words: talker.numbers; or that with each token's seconds learned: talker.seconds) and
    the batch's input ids."""
    import copy

    from models.talker import set_pace

    model, tok, hidden, embeds, roles, codes, layouts = setup
    m = copy.deepcopy(model)
    set_pace(m, tok, "duration", frames_per_second=9.0, numbers=request.param != "digits",
             learned=toy_learned(tok) if request.param == "learned" else None)
    input_ids = batch(tok, layouts)[0]
    return m, tok, hidden, embeds, roles, codes, layouts, input_ids


def expected_text(rows, bounds, f, eos):
    """Frame f's text row, written out: token k while bounds[k-1] <= f < bounds[k], moved along the text
    eos direction by the fraction of token k said before frame f times the row's own length."""
    start = 0
    for k, end in enumerate(bounds):
        if start <= f < end:
            a = (f - start) / (end - start)
            return rows[k] + a * rows[k].norm() * eos / eos.norm()
        start = end
    raise AssertionError(f"frame {f} is past the tokens")


def test_duration_layout_reads_each_spoken_token_for_its_frames(paced):
    """Training spreads a sample's frames over its spoken response tokens (pads, eos, reasoning and
    controls are skipped) in proportion to their estimated seconds; the codec eos step reads the text eos."""
    from models.talker import pace_of

    model, tok, hidden, embeds, roles, codes, layouts, input_ids = paced
    x = build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N, input_ids=input_ids)
    t = model.talker
    emb = model.thinker.get_input_embeddings().weight
    codec_emb = t.get_input_embeddings().weight
    pace = pace_of(model)
    for i in range(len(codes)):
        resp = [p for p, r in enumerate(roles[i].tolist()) if r == int(Role.RESPONSE)]
        w = pace.durations(input_ids[i, resp].tolist())  # with numbers: "15" shares the time of "fifteen"
        pos = [p for p, s in zip(resp, w.tolist()) if s > 0]
        assert 0 < len(pos) < len(resp)  # the speak-slot pads and the eos are not spoken
        assert pos == [p for p in resp if pace.seconds[input_ids[i, p]] > 0]  # the same tokens either way
        rows = [hidden[i, p] + embeds[i, p] for p in pos]
        cum = torch.cumsum(w[w > 0].double(), 0)
        frames = len(codes[i]) // N
        bounds = [round(float(c) * frames / float(cum[-1])) for c in cum]
        for s in range(len(codes[i]) + 1):
            prev = t.codec_bos_token if s == 0 else codes[i][s - 1]
            text = x.inputs_embeds[i, 1 + s] - codec_emb[prev]
            if s % N:
                want = emb[t.text_pad_token]
            elif s // N < frames:
                want = expected_text(rows, bounds, s // N, emb[t.text_eos_token])
            else:
                want = emb[t.text_eos_token]  # the codec eos is predicted where the text ends
            torch.testing.assert_close(text, want, msg=f"sample {i} step {s}")
    with pytest.raises(ValueError, match="input_ids"):
        build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_duration_stream_equals_teacher_forced(paced, temperature):
    """TalkerStream under the duration pace, fed position by position: each frame waits for the token it
    says (and no longer), and its logits equal the training layout laid out at the same rate."""
    import bisect

    model, tok, hidden, embeds, roles, codes, layouts, input_ids = paced
    n = len(layouts[0])
    h, e, r, ids = hidden[:1, :n], embeds[:1, :n], roles[:1, :n], input_ids[:1, :n]
    stream = TalkerStream(model, SIZES, temperature=temperature, generator=torch.Generator().manual_seed(3),
                          max_codes=40 * N)
    stream.allowed[:, model.talker.codec_eos_token] = False  # a random talker may end at once
    logits, pushed = [], 0
    for i, role in enumerate(r[0].tolist()):
        stream.push(role, h[0, i], e[0, i], token=int(ids[0, i]))
        pushed += role == int(Role.RESPONSE) and float(stream.pace.seconds[ids[0, i]]) > 0
        while stream.ready():
            if len(stream.codes) % N == 0:  # the token said at this frame is here
                assert bisect.bisect_right(stream.bounds, stream.frame) < pushed
            stream.step()
            logits.append(stream.logits)
        if stream.bounds and len(stream.codes) % N == 0 and not stream.done:  # waits only for want of a token
            assert stream.frame >= stream.bounds[-1]
    stream.finish()
    while stream.ready():
        stream.step()
        logits.append(stream.logits)
    got = stream.codes
    assert len(got) == 40 * N and stream.text_end_frame < 40  # it read past the text eos
    x = build_talker_inputs(model, h, e, r, [got], codebooks=N, input_ids=ids, frames_per_second=9.0)
    with torch.no_grad():
        tf = talker_forward(model, x)[0]
    for k in range(len(got)):
        torch.testing.assert_close(logits[k], tf[1 + k], rtol=1e-4, atol=1e-4)
    if temperature == 0:
        whole = generate_codes(model, h, e, r, max_new_tokens=40 * N, codebook_sizes=SIZES, input_ids=ids)
        assert len(whole) >= N and whole == got[: len(whole)]


def test_duration_codes_ignore_the_speak_think_ratio(paced):
    """The same response laid out at 2:8 and at 3:7 (other prompt, reasoning and pads around it): the
    duration pace reads only the spoken tokens, so the talker says the same thing; the position pace
    does not."""
    from models.talker import Pace

    model, tok, hidden, embeds, roles, codes, layouts, input_ids = paced
    ids = control_ids(tok)
    lay = [build("tis", text_prompt(tok, q), encode(tok, "The answer is 15."), encode(tok, rs), ids, sch,
                 delay_eos=True)
           for q, rs, sch in [("Tom has three apples.", "three plus twelve is fifteen", Schedule(2, 8)),
                              ("A longer question, about apples?", "twelve and three make fifteen", Schedule(3, 7))]]
    x, am, r = batch(tok, lay)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, x.shape[1], hidden.shape[-1], generator=g)
    e = torch.randn(2, x.shape[1], hidden.shape[-1], generator=g)
    sec = model.talker_pace.seconds
    spoken = [[p for p in range(len(l)) if l.roles[p] is Role.RESPONSE and sec[l.input_ids[p]] > 0] for l in lay]
    assert [x[0, p] for p in spoken[0]] == [x[1, p] for p in spoken[1]]
    h[1, spoken[1]], e[1, spoken[1]] = h[0, spoken[0]], e[0, spoken[0]]
    with torch.no_grad():
        a = talker_loss(model, h[:1], e[:1], r[:1], codes[:1], codebooks=N, input_ids=x[:1])
        b = talker_loss(model, h[1:], e[1:], r[1:], codes[:1], codebooks=N, input_ids=x[1:])
    assert torch.equal(a, b)
    kw = dict(max_new_tokens=30, codebook_sizes=SIZES)
    got = generate_codes(model, h[:1, : len(lay[0])], e[:1, : len(lay[0])], r[:1, : len(lay[0])],
                         input_ids=x[:1, : len(lay[0])], **kw)
    assert len(got) >= 2 * N
    assert got == generate_codes(model, h[1:, : len(lay[1])], e[1:, : len(lay[1])], r[1:, : len(lay[1])],
                                 input_ids=x[1:, : len(lay[1])], **kw)
    model.talker_pace, saved = Pace("position"), model.talker_pace
    try:
        with torch.no_grad():
            assert not torch.equal(talker_loss(model, h[:1], e[:1], r[:1], codes[:1], codebooks=N),
                                   talker_loss(model, h[1:], e[1:], r[1:], codes[:1], codebooks=N))
    finally:
        model.talker_pace = saved


def test_pace_is_saved_with_the_checkpoint(setup, paced, tmp_path):
    from models.omni import load_checkpoint, save
    from models.talker import attach_pace, pace_of, token_seconds

    model, tok = paced[0], paced[1]
    save(model, tmp_path / "model")
    tok.save_pretrained(str(tmp_path / "tokenizer"))
    loaded, loaded_tok = load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="attach_pace"):  # never read by the wrong pace
        pace_of(loaded)
    attach_pace(loaded, loaded_tok)
    p, q = pace_of(loaded), pace_of(model)
    assert p.kind == "duration" and p.frames_per_second == q.frames_per_second == 9.0
    assert torch.equal(p.seconds, q.seconds) and p.numbers == q.numbers and p.number_scale == q.number_scale
    del loaded.config.talker_config.tis_pace_learned  # a checkpoint from before talker.seconds
    attach_pace(loaded, loaded_tok)
    assert torch.equal(pace_of(loaded).seconds, token_seconds(loaded_tok))  # estimated, as it was trained
    assert pace_of(loaded).number_scale == 1.0
    del loaded.config.talker_config.tis_pace_numbers  # a checkpoint from before talker.numbers
    attach_pace(loaded, loaded_tok)
    assert not pace_of(loaded).numbers  # read as it was trained: 0.45 s a digit
    assert pace_of(setup[0]).kind == "position"  # no pace set: by position


def test_a_number_is_held_until_it_ends_then_said_for_as_long_as_its_words(setup):
    """talker.numbers: words. The stream cannot say "3162" before it knows the number is not "31620": its
    tokens wait for the token after them (or the thinker's end), then take the time of "three thousand one
    hundred and sixty-two" between them, not 4 x 0.45 s. Breakages: numbers ignored by the stream, or a
    number's rows appended before it ends, fail here."""
    import copy

    from models.saying import number_seconds, said_seconds
    from models.talker import set_pace

    model0, tok = setup[0], setup[1]
    fps = 20.0
    frames = {}
    for numbers in (False, True):
        m = copy.deepcopy(model0)
        set_pace(m, tok, "duration", fps, numbers)
        stream = TalkerStream(m, SIZES)
        ids = encode(tok, "It is 3162 apples. 42")
        texts = [tok.decode([i]) for i in ids]
        h = torch.randn(len(ids), m.thinker.config.text_config.hidden_size)
        said = 0
        for k, (i, t) in enumerate(zip(ids, texts)):
            stream.push(Role.RESPONSE, h[k], h[k], token=i)
            said += said_seconds(t) > 0
            if numbers and t.isdigit():
                assert len(stream.reply) < said  # held: the number may go on
            else:
                assert len(stream.reply) == said  # everything before this token is known
        assert len(stream.reply) == said - (2 if numbers else 0)  # "42" may still go on
        stream.finish()
        assert len(stream.reply) == said and len(stream.bounds) == said  # the thinker ended: "42" is said
        first, last = texts.index("3"), texts.index("2")
        spoken = [k for k, t in enumerate(texts) if said_seconds(t) > 0]
        a, b = spoken.index(first), spoken.index(last)
        frames[numbers] = stream.bounds[b] - stream.bounds[a - 1]
    assert frames[False] == pytest.approx(4 * said_seconds("3") * fps, abs=1)
    assert frames[True] == pytest.approx(number_seconds("3162") * fps, abs=1)
    assert frames[True] > frames[False] + 4


def test_learn_seconds_measures_each_tokens_time_on_aligned_speech(setup):
    """talker.seconds: learned. Speech whose tokens last known seconds (a third of the ids at 1.5x their
    estimate, the rest at 0.6x; numbers at 1.2x their words): the learned table gives each seen id its
    own time and numbers their scale; with the prior a token seen once stays nearer its estimate; ids it
    never saw keep the estimate times the overall ratio. Breakages tried: a token's time read from the
    previous token's start (off by one), number tokens counted in the table, the prior dropped."""
    from models.saying import number_runs, number_seconds, said_durations
    from models.talker import learn_seconds, learned_seconds, token_seconds, token_texts

    tok = setup[1]
    est, texts = token_seconds(tok), token_texts(tok)
    true = {i: float(est[i]) * (1.5 if i % 3 == 0 else 0.6) for i in range(len(est))}
    sentences = ["Tom has 3162 apples.", "three plus twelve is fifteen.", "The answer is 15.", "It is 42 more."]
    responses, words_time = [], 0.0
    for k in range(24):
        ids = encode(tok, sentences[k % len(sentences)])
        tt = [texts[i] for i in ids]
        d = [true[i] for i in ids]
        shares = said_durations(tt)  # numbers: their words' estimate shared by the tokens' own estimates
        for run in number_runs(tt):
            n = number_seconds("".join(tt[j] for j in run))
            for j in run:
                d[j] = 1.2 * shares[j]
            words_time += 1.2 * n
        starts, t = [], 0.0
        for i, dj in zip(ids, d):
            starts.append(t)
            t += dj if est[i] > 0 else 0.0
        responses.append((ids, starts, t))
    exact = learn_seconds(responses, texts, est, prior=0.0)
    assert exact["responses"] == 24 and exact["number_scale"] == pytest.approx(1.2, rel=1e-4)
    seen = {int(i): v for i, v in exact["seconds"].items()}
    digits = {i for i in range(len(texts)) if texts[i] and texts[i].isdigit()}
    assert seen and not set(seen) & digits  # numbers are timed as numbers, not digit by digit
    for i, v in seen.items():
        assert v == pytest.approx(true[i], rel=1e-4), texts[i]
    shrunk = learn_seconds(responses[:1], texts, est, prior=3.0)  # each token seen once or twice
    for i, v in shrunk["seconds"].items():
        lo, hi = sorted((true[int(i)], float(est[int(i)]) * shrunk["ratio"]))
        assert lo + 0.1 * (hi - lo) < v < hi - 0.1 * (hi - lo), texts[int(i)]  # between, not at either
    table, scale = learned_seconds(est, exact)
    assert scale == pytest.approx(1.2, rel=1e-4)
    unseen = [i for i in range(len(est)) if est[i] > 0 and i not in seen]
    assert unseen and all(float(table[i]) == pytest.approx(float(est[i]) * exact["ratio"]) for i in unseen)
    assert all(float(table[i]) == 0 for i in tok.all_special_ids)  # still says nothing
    with pytest.raises(ValueError, match="no response with aligned timing"):
        learn_seconds([(ids, [], 1.0)], texts, est)
    with pytest.raises(ValueError, match="learn_seconds"):
        learned_seconds(est, {"ratio": 1.0})


def random_answers(tok, n: int, g: torch.Generator) -> list:
    """``n`` TiS layouts of six words in random order: the next token cannot be guessed, only read."""
    words = ["three", "twelve", "apples", "Tom", "has", "answer", "plus", "is", "fifteen", "15", "3", "more"]
    answers = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (6,), generator=g)) for _ in range(n)]
    return [build("tis", text_prompt(tok, "How many?"), encode(tok, a), encode(tok, "3+12=15"), control_ids(tok),
                  Schedule(2, 8), delay_eos=True) for a in answers]


def test_a_talker_on_the_duration_pace_learns_to_say_its_tokens(setup):
    """Synthetic speech whose every frame is a function of the token being said (as a TTS voice's is):
    trained on it, the duration-paced talker scores each answer's own speech far better than another
    answer's (it listens to the thinker), and better than a position-paced talker trained the same way.
    Breakages: a pace that reads one token late, or a talker that never sees its text, lose the gap."""
    import copy

    from models.talker import frame_bounds, set_pace

    model0, tok = setup[0], setup[1]
    lay = random_answers(tok, 8, torch.Generator().manual_seed(5))
    x, am, r = batch(tok, lay)
    fps = 12.0
    seconds = set_pace(copy.deepcopy(model0), tok, "duration", fps).seconds

    def speech(layout):  # each frame: a fixed code per codebook for the token said, its first frame marked
        said = [t for t, role in zip(layout.input_ids, layout.roles) if role is Role.RESPONSE and seconds[t] > 0]
        ends, out, start = frame_bounds(seconds[said], frames_per_second=fps), [], 0
        for t, end in zip(said, ends):
            for f in range(start, end):
                out += [(t * 5 + (f == start)) % SIZES[0], SIZES[0] + (t * 7) % SIZES[1],
                        SIZES[0] + SIZES[1] + (t * 3 + f - start) % SIZES[2]]
            start = end
        return out

    codes = [speech(l) for l in lay]
    gaps = {}
    for pace in ("duration", "position"):
        torch.manual_seed(0)
        m = copy.deepcopy(model0)
        set_pace(m, tok, pace, fps if pace == "duration" else None)
        hidden, embeds = thinker_states(m, input_ids=x, attention_mask=am)
        opt = torch.optim.AdamW(m.talker.parameters(), lr=5e-3)
        for _ in range(60):
            loss = talker_loss(m, hidden, embeds, r, codes, codebooks=N, input_ids=x)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            own = talker_loss(m, hidden, embeds, r, codes, codebooks=N, input_ids=x).item()
            other = talker_loss(m, hidden, embeds, r, codes[1:] + codes[:1], codebooks=N, input_ids=x).item()
        gaps[pace] = (own, other)
    print(gaps)
    own, other = gaps["duration"]
    assert other > own + 1.0  # it says this answer's tokens, not any answer's
    assert own < 0.5 * gaps["position"][0]


def test_a_talker_trained_where_each_token_is_said_learns_it_where_an_estimate_does_not(setup):
    """Speech whose tokens last random numbers of frames (as a real voice's words do, whatever their
    letters): given each token's true end frames (``bounds``, from the TTS's word times) the talker
    learns to say its tokens and scores held-out answers' speech well; spreading the same clips by
    estimated seconds tells it the wrong token on many frames, and it only memorises its training
    clips. Breakages: bounds shifted by one token, or ignored by build_talker_inputs, lose the gap."""
    import copy

    from models.talker import set_pace

    model0, tok = setup[0], setup[1]
    g = torch.Generator().manual_seed(7)
    lay = random_answers(tok, 24, g)
    fps = 12.0
    seconds = set_pace(copy.deepcopy(model0), tok, "duration", fps).seconds

    def speech(layout):  # each token lasts 1-6 frames at random; each frame a code of the token said
        said = [t for t, role in zip(layout.input_ids, layout.roles) if role is Role.RESPONSE and seconds[t] > 0]
        out, ends = [], []
        for t in said:
            n = int(torch.randint(1, 7, (1,), generator=g))
            for f in range(n):
                out += [(t * 5 + (f == 0)) % SIZES[0], SIZES[0] + (t * 7) % SIZES[1],
                        SIZES[0] + SIZES[1] + (t * 3 + f) % SIZES[2]]
            ends.append((ends[-1] if ends else 0) + n)
        return out, ends

    made = [speech(l) for l in lay]
    train, held = slice(0, 16), slice(16, 24)
    results = {}
    for name in ("aligned", "estimated"):
        torch.manual_seed(0)
        m = copy.deepcopy(model0)
        set_pace(m, tok, "duration", fps)

        def loss_on(part):
            x, am, r = batch(tok, lay[part])
            hidden, embeds = thinker_states(m, input_ids=x, attention_mask=am)
            codes = [c for c, _ in made[part]]
            bounds = [e for _, e in made[part]] if name == "aligned" else None
            return talker_loss(m, hidden, embeds, r, codes, codebooks=N, input_ids=x, bounds=bounds)

        opt = torch.optim.AdamW(m.talker.parameters(), lr=5e-3)
        for _ in range(80):
            loss = loss_on(train)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            results[name] = (loss_on(train).item(), loss_on(held).item())
    print(results)
    assert results["aligned"][1] < 0.6 * results["estimated"][1]


def test_talker_bounds_must_match_the_spoken_tokens(setup):
    """Token end frames that do not fit the sample's spoken tokens are an error naming the fix, not a
    silent misalignment; a None row falls back to the estimate."""
    import copy

    from models.talker import set_pace

    model, tok, hidden, embeds, roles, codes, layouts = setup
    m = copy.deepcopy(model)
    set_pace(m, tok, "duration", 12.0)
    x = batch(tok, layouts)[0]
    plain = build_talker_inputs(m, hidden, embeds, roles, codes, codebooks=N, input_ids=x)
    same = build_talker_inputs(m, hidden, embeds, roles, codes, codebooks=N, input_ids=x, bounds=[None, None])
    assert torch.equal(plain.inputs_embeds, same.inputs_embeds)
    with pytest.raises(ValueError, match="rerun the synthesize stage"):
        build_talker_inputs(m, hidden, embeds, roles, codes, codebooks=N, input_ids=x, bounds=[[1, 2], None])


def stage_batch(tok, layouts, codes) -> dict:
    """The talker stage's batch (``models.losses.talker_loss_sum``): thinker inputs, codes padded with IGNORE."""
    x, am, r = batch(tok, layouts)
    flat = torch.full((len(codes), max(map(len, codes))), -100)
    for i, c in enumerate(codes):
        flat[i, :len(c)] = torch.tensor(c)
    return {"input_ids": x, "attention_mask": am, "roles": r, "codes": flat}


def test_prev_dropout_hides_previous_codes_only_in_training(setup):
    """``prev_dropout`` zeroes the previous-code part of about that share of talker inputs (never the bos
    step; the text part untouched) and the stage's loss uses it only while the model trains."""
    import copy

    from models.losses import talker_loss_sum

    model, tok, hidden, embeds, roles, codes, layouts = setup
    plain = build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N)
    torch.manual_seed(0)
    dropped = build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N, prev_dropout=0.5)
    assert torch.equal(plain.labels, dropped.labels)
    real = plain.labels != -100  # one input step per target, after the head row
    diff = (plain.inputs_embeds - dropped.inputs_embeds).abs().sum(-1)[real]
    share = (diff > 0).float().mean().item()
    assert 0.3 < share < 0.7, share
    assert torch.equal(plain.inputs_embeds[:, :2], dropped.inputs_embeds[:, :2])  # head and bos steps kept
    with pytest.raises(ValueError, match="prev_dropout"):
        build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N, prev_dropout=1.0)
    m = copy.deepcopy(model).eval()
    b = stage_batch(tok, layouts, codes)
    with torch.no_grad():
        assert talker_loss_sum(m, b, codebooks=N, prev_dropout=0.5) == talker_loss_sum(m, b, codebooks=N)
        m.train()
        assert talker_loss_sum(m, b, codebooks=N, prev_dropout=0.5) != talker_loss_sum(m, b, codebooks=N)


def test_own_previous_feeds_the_talkers_own_draw_of_the_id_before(setup):
    """Parallel scheduled sampling: at rate 1 every previous id is the talker's own draw for that step
    (greedy here: the codebook-masked argmax of the row predicting it), drawn within the step's codebook
    and never the eos; at rate 0 the truth; and the second pass reads exactly those ids one step later."""
    from models.talker import own_previous, talker_forward

    model, tok, hidden, embeds, roles, codes, layouts = setup
    first = build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N)
    logits = talker_forward(model, first).detach()
    assert own_previous(model, logits, codes, 0.0, codebook_sizes=SIZES) == [list(c) for c in codes]
    own = own_previous(model, logits, codes, 1.0, codebook_sizes=SIZES, temperature=0.0)
    eos = model.talker.codec_eos_token
    offsets = [sum(SIZES[:k]) for k in range(N)]
    for i, c in enumerate(codes):
        assert len(own[i]) == len(c)
        for s, x in enumerate(own[i]):
            k = s % N
            assert offsets[k] <= x < offsets[k] + SIZES[k] and x != eos, (s, x)
            allowed = codebook_mask(k, logits.shape[-1], eos, SIZES)
            allowed[eos] = False
            assert x == int(logits[i, 1 + s].masked_fill(~allowed, float("-inf")).argmax())  # row 1+s predicts c[s]
    fed = build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N, prev_ids=own)
    assert torch.equal(fed.labels, first.labels)  # targets stay the truth
    emb = model.talker.get_input_embeddings()
    for i, c in enumerate(codes):
        # input row 2 + s = text(s + 1) + codec(prev of step s + 1): the same text, the own id instead of c[s]
        delta = fed.inputs_embeds[i, 2 : 2 + len(c)] - first.inputs_embeds[i, 2 : 2 + len(c)]
        want = emb(torch.tensor(own[i])) - emb(torch.tensor(c))
        assert torch.allclose(delta, want.to(delta.dtype), atol=1e-5)
    half = own_previous(model, logits, codes, 0.5, codebook_sizes=SIZES, temperature=0.9,
                        generator=torch.Generator().manual_seed(0))
    changed = sum(a != b for h, c in zip(half, codes) for a, b in zip(h, c)) / sum(map(len, codes))
    assert 0.1 < changed < 0.6, changed
    with pytest.raises(ValueError, match="prev_ids"):
        build_talker_inputs(model, hidden, embeds, roles, codes, codebooks=N, prev_ids=[c[:-1] for c in codes])
    with pytest.raises(ValueError, match="self_feed"):
        own_previous(model, logits, codes, 1.5)


def test_self_feed_only_in_training(setup):
    """The stage's loss feeds the talker its own codes only while the model trains, never in evaluation."""
    import copy

    from models.losses import talker_loss_sum

    model, tok, hidden, embeds, roles, codes, layouts = setup
    m = copy.deepcopy(model).eval()
    b = stage_batch(tok, layouts, codes)
    with torch.no_grad():
        plain = talker_loss_sum(m, b, codebooks=N)
        assert talker_loss_sum(m, b, codebooks=N, self_feed=1.0, codebook_sizes=SIZES) == plain
        m.train()
        assert talker_loss_sum(m, b, codebooks=N, self_feed=1.0, codebook_sizes=SIZES) != plain


def test_own_previous_draws_from_the_top_k_softmax_at_the_temperature(setup):
    """The self-fed ids are draws from the streaming talker's distribution: softmax(logits / T) over the
    top-k ids (checked on 4,000 draws of one row: total variation < 0.05; top-k 1 is the argmax)."""
    from models.talker import own_previous

    model, *_ = setup
    limit = model.talker.codec_pad_token
    g = torch.Generator().manual_seed(0)
    row = torch.randn(model.talker.config.vocab_size, generator=g) * 2
    n = 4000
    logits = row.expand(1, n + 1, -1).clone()
    truth = [[0] * n]
    for temp, k in ((0.9, 5), (0.5, 8)):
        draws = torch.tensor(own_previous(model, logits, truth, 1.0, temperature=temp, top_k=k, generator=g)[0])
        top = row[:limit].topk(k)
        want = torch.zeros(limit)
        want[top.indices] = (top.values / temp).softmax(-1)
        got = torch.bincount(draws, minlength=limit)[:limit].float() / n
        assert (got - want).abs().sum() / 2 < 0.05, (temp, k)
    assert set(own_previous(model, logits, truth, 1.0, top_k=1, generator=g)[0]) == {int(row[:limit].argmax())}


def test_a_talker_reading_no_previous_codes_says_what_its_teacher_forced_pass_says(paced):
    """``talker.previous: none``: one step per codec frame reads its text row (the bos added at the first)
    and never a codec id, and says all n ids of the frame from one set of logits, each within its
    codebook. So (1) the teacher-forced inputs do not depend on the codes, only the labels ``(B, S, n)`` do,
    and there are frames + 1 steps (the last reads the text eos and says the codec eos); (2) the streamed
    logits equal the teacher-forced ones whatever the stream said before, and greedy free-running speech
    is the per-codebook argmax of one parallel pass over *any* codes (no exposure bias). Breakages tried:
    the stream still feeding its last id, the layout adding the true previous id, one id per step."""
    import copy

    from models.talker import feeds_previous, frame_loss, set_previous

    model0, tok, hidden, embeds, roles, codes, layouts, input_ids = paced
    m = copy.deepcopy(model0)
    assert feeds_previous(m)
    set_previous(m, "none")
    assert not feeds_previous(m)
    t = m.talker
    n = len(layouts[0])
    h, e, r, ids = hidden[:1, :n], embeds[:1, :n], roles[:1, :n], input_ids[:1, :n]
    g = torch.Generator().manual_seed(11)
    a, b = flat_codes(12, g), flat_codes(12, g)
    xa = build_talker_inputs(m, h, e, r, [a], codebooks=N, input_ids=ids, frames_per_second=9.0)
    xb = build_talker_inputs(m, h, e, r, [b], codebooks=N, input_ids=ids, frames_per_second=9.0)
    assert torch.equal(xa.inputs_embeds, xb.inputs_embeds) and not torch.equal(xa.labels, xb.labels)
    assert xa.inputs_embeds.shape[1] == 1 + 12 + 1 and xa.labels.shape == (1, 14, N)
    assert xa.labels[0, 1:13].reshape(-1).tolist() == a and xa.labels[0, 0].tolist() == [-100] * N
    assert xa.labels[0, 13].tolist() == [t.codec_eos_token] + [-100] * (N - 1)
    ya = build_talker_inputs(model0, h, e, r, [a], codebooks=N, input_ids=ids, frames_per_second=9.0)
    yb = build_talker_inputs(model0, h, e, r, [b], codebooks=N, input_ids=ids, frames_per_second=9.0)
    assert not torch.equal(ya.inputs_embeds, yb.inputs_embeds)  # the autoregressive talker reads them
    assert ya.inputs_embeds.shape[1] == 1 + 12 * N + 1
    with pytest.raises(ValueError, match="previous"):
        build_talker_inputs(m, h, e, r, [a], codebooks=N, input_ids=ids, prev_dropout=0.5)
    with torch.no_grad():  # each codebook's id under its own ids' softmax, summed over the targets
        lg = talker_forward(m, xa)[0]
        want = 0.0
        for f in range(13):
            for k in range(N):
                y = int(xa.labels[0, 1 + f, k])
                if y != -100:
                    allowed = codebook_mask(k, lg.shape[-1], t.codec_eos_token, SIZES)
                    want -= torch.log_softmax(lg[1 + f].masked_fill(~allowed, float("-inf")), -1)[y].item()
        got_loss = frame_loss(m, lg[None], xa.labels, SIZES, "sum").item()
        assert abs(got_loss - want) < 1e-3 * abs(want)
        x_est = build_talker_inputs(m, h, e, r, [a], codebooks=N, input_ids=ids)  # the stage's: spread by estimate
        summed = talker_loss(m, h, e, r, [a], "sum", codebooks=N, input_ids=ids, codebook_sizes=SIZES).item()
        assert summed == pytest.approx(frame_loss(m, talker_forward(m, x_est), x_est.labels, SIZES).item(), rel=1e-5)
        mean = talker_loss(m, h, e, r, [a], codebooks=N, input_ids=ids, codebook_sizes=SIZES).item()
        assert mean == pytest.approx(summed / talker_targets(len(a)), rel=1e-5)  # the trainer's normaliser
        with pytest.raises(ValueError, match="codebook sizes"):
            frame_loss(m, lg[None], xa.labels, None)

    for temperature in (0.0, 0.9):
        stream = TalkerStream(m, SIZES, temperature=temperature, generator=torch.Generator().manual_seed(3),
                              max_codes=30 * N)
        assert stream.steps_per_frame == 1
        stream.allowed[:, t.codec_eos_token] = False
        logits = []
        for i, role in enumerate(r[0].tolist()):
            stream.push(role, h[0, i], e[0, i], token=int(ids[0, i]))
        stream.finish()
        while stream.ready():
            stream.step()
            logits.append(stream.logits)
        got = stream.codes
        assert len(got) == 30 * N and len(logits) == 30 and stream.steps == 30
        with torch.no_grad():  # teacher-forced on *other* codes of the same length: the same logits
            tf = talker_forward(m, build_talker_inputs(m, h, e, r, [flat_codes(30, g)], codebooks=N, input_ids=ids,
                                                       frames_per_second=9.0))[0]
        for f in range(30):
            torch.testing.assert_close(logits[f], tf[1 + f], rtol=1e-4, atol=1e-4)
        if temperature == 0:
            want_ids = []
            for f in range(30):
                for k in range(N):
                    allowed = codebook_mask(k, tf.shape[-1], t.codec_eos_token, SIZES)
                    allowed[t.codec_eos_token] = False
                    want_ids.append(int(tf[1 + f].masked_fill(~allowed, float("-inf")).argmax()))
            assert got == want_ids
            whole = generate_codes(m, h, e, r, max_new_tokens=30 * N, codebook_sizes=SIZES, input_ids=ids)
            assert len(whole) % N == 0 and whole == got[: len(whole)]


def test_previous_is_saved_with_the_checkpoint_and_checked(setup, tmp_path):
    import copy

    from models.omni import load_checkpoint, save
    from models.talker import feeds_previous, set_previous

    model, tok = setup[0], setup[1]
    m = copy.deepcopy(model)
    set_previous(m, "none")
    save(m, tmp_path / "model")
    tok.save_pretrained(str(tmp_path / "tokenizer"))
    loaded, _ = load_checkpoint(tmp_path)
    assert not feeds_previous(loaded) and feeds_previous(model)
    with pytest.raises(ValueError, match="talker.previous"):
        set_previous(m, "frames")

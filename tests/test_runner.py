"""The model runner (models/runner.py) and the batch stepper on the tiny random model: many requests
stepped together in one forward give exactly what each gives alone.

- thinker: 4 prompts of different lengths in 4 slots, stepped in one batch == each decoded alone
  (tokens, logits, hidden states), greedy and sampled, with requests joining and leaving mid-way;
- talker: 4 streams (different response lengths, starting at different steps) == each alone;
- sessions: ``step_all`` over concurrent sessions (text and spoken prompts, text-only and spoken
  answers) == each session alone, events and finish reasons included;
- a slot reused after a cancel carries nothing over: same output as a fresh slot;
- the sampler: same seed -> same tokens whoever shares the batch; top-k and top-p respected; greedy
  rows take the argmax of the allowed ids.

    .venv/bin/python -m pytest tests/test_runner.py -q
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.decode import prefill, step, step_batch
from models.events import AudioEvent, DoneEvent
from models.format import Role, Schedule, cursor_for
from models.runner import Runner, SamplingParams, SlotLM, SlotsFull, sample
from models.session import Engine, Options, step_all
from models.talker import TalkerStream
from models.talker import step_batch as talker_step_batch
from models.tokenizer import control_ids, text_prompt

QUESTIONS = ["What is 2 plus 2?", "Tom has 3 apples and buys 12 more. How many apples does he have now?",
             "Hi?", "A train goes 60 miles in 2 hours. How far does it go in 5 hours at the same speed?"]
SIZES = (8, 16, 16)  # a toy 3-codebook codec for the talker-level tests


def _voice(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = rng.uniform(100, 160) + 25 * np.sin(2 * np.pi * rng.uniform(0.8, 2.5) * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.25 * x + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def engine(tokenizer, tiny_model):
    """The tiny random model with a small WORLD codec (fitted on synthetic voice in a second)."""
    from models.codec import WorldCodec

    codec = WorldCodec.fit([_voice(1.2, s) for s in range(2)], 16000, codebook_size=16, n_codebooks=3, iters=3,
                           seed=0)
    return Engine(copy.deepcopy(tiny_model).eval(), tokenizer, codec, slots=2)


def comparable(events):
    out = []
    for e in events:
        if isinstance(e, DoneEvent):
            t = {k: v for k, v in e.timings.items() if "seconds" not in k and k not in ("tokens_per_s", "audio_gaps")}
            out.append((e.response, e.reasoning, e.finish_reason, e.audio_end, t))
        else:
            out.append(e)
    return out


# ------------------------------------------------------------------------------------------- thinker
def _alone(thinker, prompt, fmt, ids, n, temperature, seed):
    st = prefill(thinker, prompt, cursor_for(fmt, Schedule(), ids), max_new_tokens=n, temperature=temperature,
                 generator=torch.Generator().manual_seed(seed))
    out = []
    while not st.done:
        out.append(step(thinker, st))
    return out


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_thinker_batch_equals_each_alone(tokenizer, tiny_model, temperature):
    """4 prompts of different lengths, one slot each, stepped together (one forward per step), with the
    4th joining after 5 steps and max_new_tokens ending them at different steps (each freed at its end,
    so live rows move under the others)."""
    ids, thinker = control_ids(tokenizer), tiny_model.thinker
    prompts = [text_prompt(tokenizer, q) for q in QUESTIONS]
    assert len({len(p) for p in prompts}) == 4
    ns = [40, 25, 33, 30]
    fmts = ["tis", "think_first", "tis", "think_first"]
    alone = [_alone(thinker, p, f, ids, n, temperature, seed=i) for i, (p, f, n) in enumerate(zip(prompts, fmts, ns))]
    lm = SlotLM.for_thinker(thinker, slots=4)
    states: list = [None] * 4
    got: list[list] = [[] for _ in range(4)]
    for t in range(60):
        for i in range(4):
            if states[i] is None and (i < 3 or t == 5):
                states[i] = prefill(lm, prompts[i], cursor_for(fmts[i], Schedule(), ids), max_new_tokens=ns[i],
                                    temperature=temperature, generator=torch.Generator().manual_seed(i))
        live = [i for i in range(4) if states[i] is not None and not states[i].done]
        if not live:
            break
        for i, out in zip(live, step_batch([states[i] for i in live])):
            got[i].append(out)
            if states[i].done:  # its row goes back: the last row in use moves into the hole
                lm.free(states[i].slot)
    assert {states[i].slot for i in range(4)} == {0, 1, 2, 3} and lm.in_use == 0
    for a, b in zip(alone, got):
        assert [s.token for s in a] == [s.token for s in b] and len(a) >= 25
        for x, y in zip(a, b):
            torch.testing.assert_close(x.logits, y.logits, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(x.hidden, y.hidden, rtol=1e-4, atol=1e-4)


def test_slot_lm_prefill_and_decode_equal_a_whole_forward(tokenizer, tiny_model):
    """The slot cache against the model's own forward of each whole sequence: rows of different lengths
    in non-consecutive slots (a gathered batch) and in consecutive ones (a view)."""
    th = tiny_model.thinker
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(5, 500, (1, n), generator=g) for n in (7, 12, 20)]
    lm = SlotLM.for_thinker(th, slots=6, capacity=8)  # capacity grows past 8 on the way
    slots = [4, 1, 2]
    for s in range(6):
        assert lm.acquire() == s
    for s in (0, 3, 5):
        lm.free(s)
    with torch.inference_mode():
        for s, x in zip(slots, seqs):
            lm.forward([s], input_ids=x)
        for order in (slots, [1, 2]):
            nxt = torch.randint(5, 500, (len(order), 1), generator=g)
            h = lm.forward(order, input_ids=nxt)[:, -1]
            for r, s in enumerate(order):
                i = slots.index(s)
                seqs[i] = torch.cat([seqs[i], nxt[r : r + 1]], 1)
                ref = th.model(input_ids=seqs[i]).last_hidden_state[0, -1]
                torch.testing.assert_close(h[r], ref, rtol=1e-5, atol=1e-5)
    assert [lm.length(s) for s in slots] == [8, 14, 22] and lm.capacity >= 22


def test_eager_attention_takes_the_same_mask(tokenizer, tiny_model):
    """The per-row mask is additive, so HF's eager attention (which adds the mask) masks as sdpa does."""
    model = copy.deepcopy(tiny_model)
    model.thinker.set_attn_implementation("eager")
    assert model.thinker.config.text_config._attn_implementation == "eager"
    ids = control_ids(tokenizer)
    prompts = [text_prompt(tokenizer, q) for q in QUESTIONS[:3]]
    lm = SlotLM.for_thinker(model.thinker, slots=3)
    states = [prefill(lm, p, cursor_for("tis", Schedule(), ids), max_new_tokens=20) for p in prompts]
    got: list[list[int]] = [[] for _ in states]
    while live := [i for i, s in enumerate(states) if not s.done]:
        for i, out in zip(live, step_batch([states[i] for i in live])):
            got[i].append(out.token)
    assert got == [[s.token for s in _alone(tiny_model.thinker, p, "tis", ids, 20, 0.0, 0)] for p in prompts]


def test_slot_errors(tiny_model):
    lm = SlotLM.for_thinker(tiny_model.thinker, slots=1, max_slots=2, max_len=16)
    a, b = lm.acquire(), lm.acquire()
    assert lm.slots == 2 and {a, b} == {0, 1}
    with pytest.raises(SlotsFull, match="max_slots"):
        lm.acquire()
    with pytest.raises(ValueError, match="max_len"):
        lm.forward([a], input_ids=torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="once per forward"):
        lm.forward([a, a], input_ids=torch.ones(2, 1, dtype=torch.long))
    lm.free(b)
    with pytest.raises(ValueError, match="not acquired"):
        lm.forward([b], input_ids=torch.ones(1, 1, dtype=torch.long))
    lm.free(b)  # idempotent
    assert lm.acquire() not in (a, b) and lm.in_use == 2
    with torch.inference_mode():  # a runner made and used inside inference mode frees outside it
        inner = SlotLM.for_thinker(tiny_model.thinker, slots=1)
        inner.forward([s := inner.acquire()], input_ids=torch.ones(1, 3, dtype=torch.long))
    inner.free(s)
    with pytest.raises(ValueError, match="ever acquired"):
        lm.free(99)


def test_a_slot_holds_more_than_the_configs_max_positions(tiny_model):
    """30 s of speech is 6,002 talker positions: more than the tiny config's max_position_embeddings
    (4096), which the per-request DynamicCache never enforced either."""
    lm = SlotLM.for_talker(tiny_model.talker)
    assert tiny_model.talker.config.max_position_embeddings < 6002 <= lm.max_len
    s = lm.acquire()
    width = tiny_model.thinker.config.text_config.hidden_size
    lm.forward([s], inputs_embeds=torch.randn(1, 6002, width))
    assert lm.length(s) == 6002 and lm.capacity >= 6002


def test_freed_slot_carries_nothing_over(tokenizer, tiny_model):
    """A request cancelled mid-way leaves its slot zeroed; the next request in that slot decodes exactly
    as in a fresh runner."""
    ids, thinker = control_ids(tokenizer), tiny_model.thinker
    long, short = (text_prompt(tokenizer, q) for q in (QUESTIONS[3], QUESTIONS[0]))
    lm = SlotLM.for_thinker(thinker, slots=1, max_slots=1)
    st = prefill(lm, long, cursor_for("tis", Schedule(), ids), max_new_tokens=50)
    for _ in range(20):
        step(None, st)
    row = lm.row(st.slot)
    lm.free(st.slot)  # cancelled
    assert lm.in_use == 0 and not lm.k[:, row].any() and not lm.v[:, row].any()
    again = prefill(lm, short, cursor_for("tis", Schedule(), ids), max_new_tokens=30)
    assert lm.row(again.slot) == row
    reused = []
    while not again.done:
        reused.append(step(None, again).token)
    assert reused == [s.token for s in _alone(thinker, short, "tis", ids, 30, 0.0, 0)]


# -------------------------------------------------------------------------------------------- talker
def _response_inputs(model, n_resp: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    h = model.thinker.config.text_config.hidden_size
    roles = [Role.PROMPT] * 3 + ([Role.CONTROL] + [Role.RESPONSE] * 2 + [Role.REASONING] * 3) * n_resp
    hidden = torch.randn(len(roles), h, generator=g)
    return roles, hidden, torch.randn(len(roles), h, generator=g)


def _stream(model, lm=None, temperature=0.0, seed=0):
    s = TalkerStream(model, SIZES, temperature=temperature, top_k=8, generator=torch.Generator().manual_seed(seed),
                     max_codes=12 * len(SIZES), lm=lm)
    s.allowed[:, model.talker.codec_eos_token] = False  # a random talker may end at once: run to the cap
    return s


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_talker_batch_equals_each_alone(tiny_model, temperature):
    """4 streams with different replies, started at different thinker positions (so a first step with
    its head row shares a round with later steps), stepped with one forward per round == each alone."""
    model = tiny_model
    inputs = [_response_inputs(model, n, seed=i) for i, n in enumerate((2, 5, 3, 4))]

    def feed(stream, i, pos):
        roles, h, e = inputs[i]
        if pos < len(roles):
            stream.push(roles[pos], h[pos], e[pos])
        elif not stream.thinker_done:
            stream.finish()

    alone = []
    for i in range(4):
        s = _stream(model, temperature=temperature, seed=i)
        for pos in range(80):
            feed(s, i, pos)
            while s.ready():
                s.step()
        alone.append(s.codes)
    lm = SlotLM.for_talker(model.talker, slots=4)
    streams = [_stream(model, lm, temperature, seed=i) for i in range(4)]
    start = [0, 3, 7, 1]
    for pos in range(80):
        for i, s in enumerate(streams):
            if pos >= start[i]:
                feed(s, i, pos - start[i])
        while due := [s for s in streams if s.ready()]:
            talker_step_batch(due)
    assert [s.codes for s in streams] == alone and all(len(c) == 12 * len(SIZES) for c in alone)


# ------------------------------------------------------------------------------------------ sessions
def _sessions(engine, wave):
    return [
        dict(text=QUESTIONS[0], options=Options(max_new_tokens=40, max_audio_seconds=1.0, seed=1)),
        dict(text=QUESTIONS[1], options=Options(fmt="think_first", max_new_tokens=30, audio=False, seed=2)),
        dict(audio=(wave, 16000), options=Options(max_new_tokens=24, temperature=0.9, max_audio_seconds=0.6, seed=3)),
        dict(text=QUESTIONS[3], options=Options(max_new_tokens=36, temperature=0.7, max_audio_seconds=0.8, seed=4,
                                                speak=3, think=5)),
    ]


def test_step_all_equals_each_session_alone(engine):
    """4 concurrent sessions (text and spoken prompts, spoken and text-only answers, greedy and sampled)
    stepped with step_all == each alone; the 2-slot runner grows to hold them; slots come back."""
    wave = _voice(1.0, 7)
    kinds = _sessions(engine, wave)
    alone, n_calls = [], []  # each alone: its events and how many step() calls it took
    for k in kinds:
        s, events, n = engine.session(**k), [], 0
        while not s.done:
            events += s.step()
            n += 1
        alone.append(comparable(events))
        n_calls.append(n)
    assert engine.runner.thinker.in_use == 0 and engine.runner.talker.in_use == 0
    sessions = [engine.session(**k) for k in kinds]
    got: list[list] = [[] for _ in sessions]
    rounds = 0
    while not all(s.done for s in sessions):
        for out, events in zip(got, step_all(sessions)):
            out += events
        rounds += 1
    assert [comparable(g) for g in got] == alone
    assert rounds == max(n_calls)  # one round per step: nobody waits for another
    assert sum(isinstance(e, AudioEvent) for e in got[0]) >= 1 and isinstance(got[1][-1], DoneEvent)
    assert engine.runner.thinker.slots >= 4 and engine.runner.thinker.in_use == 0 and engine.runner.talker.in_use == 0


def test_cancelled_session_slot_reused_like_fresh(engine):
    """Closing a session mid-answer frees its slots at once; a new session in the same slots gives what
    it gives in a fresh engine."""
    kinds = _sessions(engine, _voice(1.0, 7))
    fresh = Engine(engine.model, engine.tokenizer, engine.codec, slots=1)
    want = comparable(list(fresh.session(**kinds[3])))
    a = engine.session(**kinds[0])
    for _ in range(15):
        a.step()
    rows = lambda s: (s._thinker_slot[0].row(s._thinker_slot[1]), s._talker_slot[0].row(s._talker_slot[1]))  # noqa: E731
    held = rows(a)
    a.close()
    assert engine.runner.thinker.in_use == 0 and engine.runner.talker.in_use == 0
    b = engine.session(**kinds[3])
    events = b.step()
    assert rows(b) == held
    events += list(b)
    assert comparable(events) == want


def test_dropped_session_gives_its_slots_back(engine):
    import gc

    s = engine.session(text=QUESTIONS[0], options=Options(max_new_tokens=20, max_audio_seconds=0.5))
    s.step()
    assert engine.runner.thinker.in_use == 1
    del s
    gc.collect()
    t = engine.session(text=QUESTIONS[2], options=Options(max_new_tokens=2, audio=False))
    t.step()  # a new session reclaims them
    assert engine.runner.thinker.in_use == 1 and engine.runner.talker.in_use == 0
    t.close()


def test_step_all_isolates_a_failing_session(engine, monkeypatch):
    """One session's failure is its ErrorEvent; the session it shared the batch with goes on unchanged."""
    from models.events import ErrorEvent

    opts = Options(max_new_tokens=12, audio=False)
    want = comparable(list(engine.session(text=QUESTIONS[0], options=opts)))
    ok, bad = engine.session(text=QUESTIONS[0], options=opts), engine.session(text=QUESTIONS[1], options=opts)
    got_ok, got_bad = step_all([ok, bad])

    def broken(*a, **k):
        raise RuntimeError("device lost")

    monkeypatch.setattr(bad._text, "push", broken)  # this session's own work fails, not the batch
    monkeypatch.setattr(bad._reasoning, "push", broken)
    while not ok.done:
        a, b = step_all([ok, bad])
        got_ok, got_bad = got_ok + a, got_bad + b
    assert comparable(got_ok) == want
    assert bad.done and isinstance(got_bad[-1], ErrorEvent) and "device lost" in got_bad[-1].message
    assert sum(isinstance(e, ErrorEvent) for e in got_bad) == 1
    ok.close()
    with pytest.raises(RuntimeError, match="closed"):
        step_all([ok])


# ------------------------------------------------------------------------------------------- sampler
def test_sampler_seeded_and_independent_of_the_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g)

    def draw(rows, seed):
        gens = {r: torch.Generator().manual_seed(seed + r) for r in rows}
        out = {r: [] for r in rows}
        for _ in range(20):
            toks = sample(logits[rows], [SamplingParams(1.0, generator=gens[r]) for r in rows])
            for r, t in zip(rows, toks.tolist()):
                out[r].append(t)
        return out

    both, alone = draw([0, 2], 5), draw([2], 5)
    assert both[2] == alone[2] == draw([2], 5)[2]  # same seed, same tokens, whoever shares the batch
    assert draw([2], 6)[2] != alone[2]


def test_sampler_top_k_top_p_greedy_and_allowed():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 30, generator=g)
    allowed = torch.ones(4, 30, dtype=torch.bool)
    allowed[3, logits[3].argmax()] = False  # a greedy row's best id is banned
    top3 = logits.topk(3).indices
    probs = torch.softmax(logits[1], -1)
    order = probs.argsort(descending=True)
    nucleus = set(order[: int((probs[order].cumsum(0) < 0.6).sum()) + 1].tolist())
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    seen: list[set] = [set() for _ in range(4)]
    for _ in range(300):
        params = [SamplingParams(1.0, top_k=3, generator=gens[0]), SamplingParams(1.0, top_p=0.6, generator=gens[1]),
                  SamplingParams(0.0), SamplingParams(0.0)]
        for r, t in enumerate(sample(logits, params, allowed).tolist()):
            seen[r].add(t)
    assert seen[0] == set(top3[0].tolist())  # only the top 3, and all of them over 300 draws
    assert seen[1] <= nucleus and len(seen[1]) > 1
    assert seen[2] == {int(logits[2].argmax())}
    masked = logits[3].masked_fill(~allowed[3], float("-inf"))
    assert seen[3] == {int(masked.argmax())}


def test_runner_holds_both_stacks(tiny_model):
    r = Runner(tiny_model, slots=2)
    assert r.thinker.slots == r.talker.slots == 2 and r.talker.float_logits
    with pytest.raises(ValueError, match="slots"):
        SlotLM.for_thinker(tiny_model.thinker, slots=0)


# ---------------------------------------------------------------------------------------- evaluation
def test_evaluation_answers_in_batches_equal_one_at_a_time(engine):
    """tasks.evaluate.decode.answers with batch 3 over 5 jobs (a place freed by a finished answer goes
    to the next job) == each job answered alone, text, spoken answers and PCM included."""
    from tasks.evaluate.decode import Job, answer, answers

    def job(i, q, speak, n):
        return Job(i, f"q{i}", "single_step_reasoning", q, "4", "tis" if i % 2 == 0 else "think_first", 2, 8, n,
                   0.0, i, speak, 0.6, False, None, 0, input="text")

    jobs = [job(i, q, i < 2, n) for i, (q, n) in enumerate(zip(QUESTIONS + QUESTIONS[:1], (20, 36, 12, 28, 16)))]
    alone = [answer(engine, j) for j in jobs]
    got = sorted(answers(engine, jobs, batch=3), key=lambda x: x[0])
    assert [k for k, _, _ in got] == list(range(5))

    def same(row):
        return {k: v for k, v in row.items() if k != "timings"} | {
            "timings": {k: v for k, v in row["timings"].items() if "seconds" not in k and k not in (
                "tokens_per_s", "audio_gaps", "decode_batch")}}

    for (row, pcm), (_, brow, bpcm) in zip(alone, got):
        assert same(brow) == same(row) and bpcm == pcm
        assert brow["timings"]["decode_batch"] == 3 and row["timings"]["decode_batch"] == 1
    assert alone[0][1]  # a spoken answer (think-first may not reach its response in 36 positions)


def test_static_decoder_equals_the_slot_forward(tiny_model):
    """The compile-ready decode step (own layer loop over the model's modules, static shapes) gives
    the eager SlotLM.forward's hidden states, thinker and talker; 3 rows padded to a batch of 4, and
    the pad row's next request unaffected."""
    from models.runner import StaticDecoder

    g = torch.Generator().manual_seed(0)
    width = tiny_model.thinker.config.text_config.hidden_size
    for make, embeds in ((SlotLM.for_thinker, False), (SlotLM.for_talker, True)):
        stack = tiny_model.talker if embeds else tiny_model.thinker
        lm_a, lm_b = make(stack, slots=4, capacity=64), make(stack, slots=4, capacity=64)

        def x(b, t):
            return (dict(inputs_embeds=torch.randn(b, t, width, generator=g)) if embeds
                    else dict(input_ids=torch.randint(5, 500, (b, t), generator=g)))

        sa, sb = [lm_a.acquire() for _ in range(3)], [lm_b.acquire() for _ in range(3)]
        for a, b, n in zip(sa, sb, (5, 9, 2)):
            xi = x(1, n)
            lm_a.forward([a], **xi)
            lm_b.forward([b], **xi)
        dec = StaticDecoder(lm_b, batch=4)
        for _ in range(4):  # 3 rows, padded to 4
            xi = x(3, 1)
            torch.testing.assert_close(dec(sb, **xi), lm_a.forward(sa, **xi), rtol=1e-5, atol=1e-5)
        assert [lm_b.length(s) for s in sb] == [9, 13, 6] and lm_b.in_use == 3
        xi = x(1, 7)  # a request in the pad row: the padding left nothing it can see
        sa.append(lm_a.acquire())
        lm_a.forward([sa[-1]], **xi)
        sb.append(lm_b.acquire())
        lm_b.forward([sb[-1]], **xi)
        for _ in range(3):
            xi = x(4, 1)
            torch.testing.assert_close(dec(sb, **xi), lm_a.forward(sa, **xi), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="rows 0..b-1"):
            dec(sb[::-1], **xi)


def test_gpu_bench_runs_at_smoke_size_and_says_why_it_skips(tmp_path):
    """bench/bench_rtf_gpu.py must not rot where there is no GPU: its code at tiny shapes on the CPU;
    without --smoke and without a GPU it records why it measured nothing."""
    import json

    from bench import bench_rtf_gpu

    r = bench_rtf_gpu.main(["--smoke", "--modes", "eager", "static", "--steps", "2", "--warmup", "1",
                            "--json", str(tmp_path / "smoke.json")])
    assert not r["errors"] and len(r["rows"]) == 2 * 2 * 2  # thinker and talker, 2 modes, batches 1 and 16
    assert {s["batch"] for s in r["summary"]} == {1, 16} and all(s["rtf"] > 0 for s in r["summary"])
    assert json.loads((tmp_path / "smoke.json").read_text())["summary"] == r["summary"]
    if not torch.cuda.is_available():
        skipped = bench_rtf_gpu.main(["--json", str(tmp_path / "gpu.json")])
        assert "no CUDA GPU" in skipped["skipped"] and "skipped" in json.loads((tmp_path / "gpu.json").read_text())


@pytest.mark.parametrize("compile", ["static", "no-such-mode"])
def test_engine_with_the_static_decode_step_gives_the_same_events(engine, compile):
    """Engine(compile=...): decode steps of every active row through the StaticDecoder ("static": no
    torch.compile) give the eager events; a compile that cannot run falls back to eager."""
    kinds = _sessions(engine, _voice(1.0, 7))
    other = Engine(engine.model, engine.tokenizer, engine.codec, slots=4, compile=compile)
    want = [comparable(list(engine.session(**k))) for k in kinds]
    sessions = [other.session(**k) for k in kinds]
    got: list[list] = [[] for _ in sessions]
    while not all(s.done for s in sessions):
        for out, events in zip(got, step_all(sessions)):
            out += events
    assert [comparable(g) for g in got] == want
    lm = other.runner.thinker
    if compile == "static":
        assert lm.compile == "static" and lm._static  # the static step ran
    else:
        assert lm.compile is False  # fell back

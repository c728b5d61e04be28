"""The learnability ladder: one small arithmetic task through the project's own stack, one rung at a time.

Every rung uses the project's tokenizer (a BPE trained as ``init_model`` trains it), the tiny
Qwen2.5-Omni built from ``params.yaml``'s ``model.tiny``, the sequence format (``models.format``),
the pipeline's trainer (``tasks.core.trainer.train``: DeepSpeed engine, lazy data, the stage's freeze
table) and the streaming session (``models.session``, greedy) scored by AudioBench's rule. A rung
changes one thing from the one before, so a drop in held-out accuracy points at what loses it:

    a  plain_lm   text question (digits) -> "reasoning response", plain LM     (pretrain stage, text only)
    b  think_first text question (digits) -> think-first layout                 (text_tis stage)
    c  tis        text question (digits) -> TiS interleaved layout (speak:think) (text_tis stage)
    d  words      like c, but the question's numbers are words (as a transcript reads them)
    e  audio      like c, but the question is spoken (TTS) and heard through the audio encoder
                  (align -> acoustic_tis stages on the same problems); ``--voices one`` says every question
                  in one voice (en-us, 175 wpm), ``--voices params`` in a voice, rate and pitch drawn per
                  problem from params.yaml's ``synthesize.tts`` as the pipeline's questions are. Audio rungs
                  also report ``heard``: the share of held-out answers whose reasoning starts with every
                  number of the question (the evaluation's ``heard_numbers``)
    f  stages     the full stage sequence: align -> pretrain -> text_tis -> acoustic_tis, audio question

    .venv/bin/python -m bench.bench_ladder --task add --rungs a,b,c,d --steps 600
    .venv/bin/python -m bench.bench_ladder --task mul --trace one_line,scratchpad --rungs c
    .venv/bin/python -m bench.bench_ladder --task div --digits 3 --trace scratchpad,multiples --rungs c,b

Prints a table and writes bench/results/ladder-<task>.json (accuracy per rung and trace, seconds of
training, steps, examples seen, and a few decoded answers to read).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RUNGS = {
    "a": ("plain_lm", "pretrain", "plain", "digits"),
    "b": ("think_first", "text_tis", "think_first", "digits"),
    "c": ("tis", "text_tis", "tis", "digits"),
    "d": ("words", "text_tis", "tis", "words"),
    "e": ("audio", "acoustic_tis", "tis", "audio"),
    "f": ("stages", "all", "tis", "audio"),
}
OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "builtin": ""}
WORD = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}


def make_problem(rng: random.Random, task: str, trace_style: str, digits: int = 2) -> dict:
    """One problem of ``task``: n-digit + n-digit, n-digit - n-digit (a >= b), n-digit x 1-digit, or an exact
    division by one digit with a quotient of 2 to 1.5 * 10**(n-1) (the built-in word problems' sharing: 2 to 15
    at n = 2) (``digits`` n, 2 by default). ``trace_style`` is one of ``tasks.synth.scratchpad.STYLES``, or for
    ``div`` also ``multiples``: each column counts the divisor's multiples (``63: 9*1=9 ... 9*8=72 q7 r0``)
    instead of stating its quotient digit in one step (``63/9=7 r0``)."""
    from tasks.synth.scratchpad import div, trace, value

    op = OPS[task]
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    a = rng.randint(lo, hi)
    b = rng.randint(2, 9) if op in "*/" else rng.randint(lo, hi)
    if op == "-" and b > a:
        a, b = b, a
    if op == "/":
        a = b * rng.randint(2, max(3, 15 * 10 ** (digits - 2)))
    v = value(a, op, b)
    reasoning = div(a, b, multiples=True) if trace_style == "multiples" else trace(a, op, b, trace_style)
    return {"question": f"What is {a} {WORD[op]} {b}?", "reasoning": reasoning,
            "response": f"{a} {WORD[op]} {b} is {v}. The answer is {v}.", "answer": str(v), "key": (a, b)}


def kind_cycle(spec: str) -> tuple[str, ...]:
    """``"short_digit:3,single_step:1"`` -> the generator's kind cycle (each kind repeated by its weight)."""
    from tasks.synth.builtin import KINDS

    if not spec:
        return KINDS
    out = []
    for part in spec.split(","):
        name, _, w = part.partition(":")
        out += [name.strip()] * int(w or 1)
    return tuple(out)


def builtin_problems(n_train: int, n_test: int, seed: int, kinds: str = "",
                     style: str = "scratchpad") -> tuple[list[dict], list[dict]]:
    """The pipeline's own generator (traces in ``style``; training kinds weighted by ``kinds``, held-out
    problems always all four kinds alike); held-out problems from other seeds and never a question of the
    training set, as the proxy benchmark draws them."""
    from tasks.synth.builtin import generate_problems

    as_dict = lambda p: {"question": p.question, "reasoning": p.reasoning, "response": p.response,  # noqa: E731
                         "answer": p.answer, "kind": p.kind}
    train = [as_dict(p) for p in generate_problems(n_train, seed=seed, kinds=kind_cycle(kinds), style=style)]
    seen = {p["question"] for p in train}
    test = [as_dict(p) for p in generate_problems(n_test * 2, seed=seed + 7919, style=style)
            if p.question not in seen][:n_test]
    return train, test


def problems(task: str, n_train: int, n_test: int, seed: int, trace_style: str,
             kinds: str = "", digits: int = 2) -> tuple[list[dict], list[dict]]:
    """Disjoint train and held-out problems (no (a, b) pair in both)."""
    if task == "builtin":
        return builtin_problems(n_train, n_test, seed, kinds, trace_style)
    rng = random.Random(seed)
    test, keys = [], set()
    while len(test) < n_test:
        p = make_problem(rng, task, trace_style, digits)
        if p["key"] not in keys:
            keys.add(p["key"])
            test.append(p)
    train = []
    while len(train) < n_train:
        p = make_problem(rng, task, trace_style, digits)
        if p["key"] not in keys:
            train.append(p)
    return train, test


def rows(probs: list[dict], tok, schedule, tts=None, audio_dir: Path | None = None, prefix: str = "x") -> list[dict]:
    """Dataset rows (tasks/core/dataset.py's contract); spoken questions when ``tts`` is given: a backend,
    or a function of the problem's index returning one (a voice per problem)."""
    from models.drift import tokenize_sample
    from tasks.synth.verbalize import speakable

    out = []
    for i, p in enumerate(probs):
        t = tokenize_sample(tok, p["question"], p["response"], p["reasoning"], schedule)
        spoken = speakable(p["question"])
        r = {"id": f"{prefix}-{i}", "source": "ladder", "kind": p.get("kind", "ladder"), "question": p["question"],
             "spoken_question": spoken, "reasoning": p["reasoning"], "response": p["response"],
             "answer": p["answer"], "question_ids": t.question_ids, "response_ids": t.response_ids,
             "reasoning_ids": t.reasoning_ids, "min_block": t.min_block}
        if tts is not None:
            import soundfile as sf

            wav, sr = (tts(i) if callable(tts) else tts).synthesize(spoken)
            rel = f"audio/{prefix}-{i}.flac"
            sf.write(str(audio_dir / rel), wav, sr)
            r.update(question_audio=rel, question_seconds=len(wav) / sr)
        out.append(r)
    return out


def score(ckpt: Path, test: list[dict], fmt: str, form: str, p, data_dir: Path, max_new: int) -> tuple[float, list]:
    """Greedy answers through the streaming session; AudioBench's rule on the spoken response."""
    import soundfile as sf

    from models.session import Engine, Options
    from models.events import DoneEvent
    from tasks.evaluate.metric import is_correct
    from tasks.evaluate.summary import heard_numbers
    from tasks.synth.verbalize import speakable

    engine = Engine.load(ckpt)
    if fmt == "plain":
        return _score_plain(engine, test, max_new)
    opts = Options(fmt=fmt, speak=p.schedule.speak, think=p.schedule.think, max_new_tokens=max_new, audio=False)
    correct, shown, per = 0, [], {}
    for i, q in enumerate(test):
        if form == "audio":
            wav, sr = sf.read(str(data_dir / q["question_audio"]), dtype="float32")
            session = engine.session(audio=(wav, sr), options=opts)
        else:
            session = engine.session(text=q["question"] if form == "digits" else speakable(q["question"]), options=opts)
        done = next(ev for ev in session if isinstance(ev, DoneEvent))
        ok = is_correct(done.response, q["answer"], "short_digit")
        correct += ok
        was_heard = form == "audio" and bool(
            heard_numbers({"input": "audio", "question": q["question"], "reasoning": done.reasoning}))
        k = per.setdefault(q.get("kind", "ladder"), [0, 0, 0])
        k[0] += ok
        k[1] += 1
        k[2] += was_heard
        if len(shown) < 4 or (not ok and len(shown) < 6):
            shown.append({"question": q["question"], "gold": q["answer"], "response": done.response,
                          "reasoning": done.reasoning, "correct": ok})
    shown.append({"per_kind": {k: round(a / n, 4) for k, (a, n, _) in per.items()},
                  **({"heard": round(sum(h for _, _, h in per.values()) / max(1, len(test)), 4),
                      "heard_per_kind": {k: round(h / n, 4) for k, (_, n, h) in per.items()}} if form == "audio" else {})})
    return correct / max(1, len(test)), shown


def _score_plain(engine, test: list[dict], max_new: int) -> tuple[float, list]:
    """Rung a: a plain LM, no format: greedy ``generate`` from the text prompt to eos, the whole output scored."""
    import torch

    from models.tokenizer import text_prompt
    from tasks.evaluate.metric import is_correct

    tok, th = engine.tokenizer, engine.model.thinker
    correct, shown = 0, []
    for q in test:
        x = torch.tensor([text_prompt(tok, q["question"])])
        with torch.inference_mode():
            y = th.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                            eos_token_id=engine.ids.eos, pad_token_id=tok.pad_token_id)
        text = tok.decode(y[0, x.shape[1]:], skip_special_tokens=True)
        ok = is_correct(text, q["answer"], "short_digit")
        correct += ok
        if len(shown) < 4:
            shown.append({"question": q["question"], "gold": q["answer"], "output": text, "correct": ok})
    return correct / max(1, len(test)), shown


def ladder_tts(voices: str, synth, seed: int):
    """The spoken rungs' TTS: ``one`` voice (en-us, 175 wpm, pitch 50) for every question, or ``params``: a voice,
    rate and pitch per problem drawn from ``synth.tts`` (voices, rate_min..max, pitch_min..max), seeded."""
    from models.tts import make_tts

    if voices == "one":
        return make_tts("espeak")
    if voices != "params":
        raise SystemExit(f"--voices is 'one' or 'params', got {voices!r}")
    from dataclasses import replace

    from tasks.synth.pipeline import voice_for

    cfg, cache = replace(synth, seed=seed), {}

    def draw(i: int):
        v = voice_for(cfg, f"ladder-{i}")  # the pipeline's own draw, keyed per problem
        if v not in cache:
            cache[v] = make_tts("espeak", voice=v[0], rate=v[1], pitch=v[2])
        return cache[v]

    return draw


def run_rung(rung: str, task: str, trace_style: str, args, work: Path) -> dict:
    from models.format import Schedule
    from models.omni import build_tiny, save
    from tasks.core.checkpoint import latest
    from tasks.core.dataset import write_dataset
    from tasks.core.params import load_params
    from tasks.core.trainer import train
    from tasks.init_model import build_tokenizer, streams

    name, stage, fmt, form = RUNGS[rung]
    sp = {"steps": args.steps, "batch_size": args.batch, "lr": args.lr, "warmup_steps": 20, "max_len": 640}
    # The held-out probe (tasks/core/probe.py) on the validation rows (held-out problems): a curve in the log.
    no_probe = {"probe_every": args.probe_every, "probe_problems": 32 if args.probe_every else 0}
    # Rung d: every text prompt says its numbers in words (as a transcript does), in training and here.
    words = 1.0 if form == "words" else 0.0
    overrides = {"seed": args.seed,
                 "trainer": {"log_every": max(1, args.steps // 5), "checkpoint_every": 10**6, "keep_checkpoints": 1,
                             **({"length_group": args.length_group} if args.length_group else {})},
                 "pretrain": {**sp, "text_fraction": 1.0, "words_fraction": words},
                 "text_tis": {**sp, **no_probe, "words_fraction": words, "text_pool": False, "spoken_fraction": 0.0},
                 "acoustic_tis": {**sp, **no_probe},
                 "align": {**sp, "steps": args.align_steps, "lr": args.align_lr}}
    overrides["model"] = {"stream_mask": args.stream_mask or args.stream_clock, "stream_clock": args.stream_clock}
    if args.markers is not None:
        overrides["model"]["stream_markers"] = args.markers
    if args.dims:
        overrides["model"]["tiny"] = json.loads(args.dims)
    p = load_params(overrides=overrides)
    schedule = Schedule(p.schedule.speak, p.schedule.think)
    d = work / f"{task}-{trace_style}-{rung}"
    tok = build_tokenizer(p)
    init = d / "init_model"
    model = build_tiny(p.model.tiny, tok, seed=p.seed)
    streams(model, tok, p)  # params.yaml's stream markers and mask, as init_model sets them
    save(model, init / "model")
    tok.save_pretrained(str(init / "tokenizer"))
    train_p, test_p = problems(task, args.train, args.test, args.seed, trace_style, args.kinds, args.digits)
    data = d / "data"
    spoken = form == "audio"
    (data / "audio").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tts = ladder_tts(args.voices, p.synthesize, args.seed) if spoken else None
    train_rows = rows(train_p, tok, schedule, tts, data, "train")
    test_rows = rows(test_p, tok, schedule, tts, data, "test")
    tts_s = time.time() - t0
    # write_dataset writes atomically into data/: keep the audio beside it
    audio_tmp = d / "audio"
    (data / "audio").rename(audio_tmp)
    write_dataset(data, {"train": train_rows, "validation": test_rows[:64]}, {}, extra_dir=audio_tmp)
    stages = {"a": ["pretrain"], "b": ["text_tis"], "c": ["text_tis"], "d": ["text_tis"],
              "e": ["align", "acoustic_tis"], "f": ["align", "pretrain", "text_tis", "acoustic_tis"]}[rung]
    src, seconds, history = init, 0.0, {}
    for st in stages:
        sp_st = getattr(p, st)
        if rung == "f" and st == "pretrain":
            p = load_params(overrides={**overrides, "pretrain": {**sp, "text_fraction": 0.5, "words_fraction": 0.0}})
            sp_st = p.pretrain
        out = d / st
        res = train(st, p, sp_st, data, src, out, fmt=fmt if st not in ("align", "pretrain") else "tis")
        seconds += res.seconds
        history[st] = {"first": res.history[0][1], "last": res.final_loss, "val": res.val_loss,
                       "seconds": round(res.seconds, 1), "steps": res.steps}
        src = out
    acc, shown = score(latest(src), test_rows, fmt, form, p, data, args.max_new)
    tail = shown.pop() if shown and "per_kind" in shown[-1] else {}
    per_kind = tail.get("per_kind", {})
    return {"per_kind": per_kind, "rung": rung, "name": name, "task": task, "trace": trace_style, "format": fmt, "input": form,
            "stages": stages, "accuracy": round(acc, 4), **({"heard": tail["heard"], "heard_per_kind": tail["heard_per_kind"], "voices": args.voices}
                                                       if "heard" in tail else {}),
            "stream_mask": p.model.stream_mask, "stream_clock": p.model.stream_clock,
            "stream_markers": p.model.stream_markers, "train_seconds": round(seconds, 1),
            "tts_seconds": round(tts_s, 1), "digits": args.digits, "steps": args.steps, "batch": args.batch, "lr": args.lr, "kinds": args.kinds, "length_group": p.trainer.length_group,
            "examples_seen": args.steps * args.batch, "train_problems": args.train, "held_out": args.test,
            "losses": history, "examples": shown}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_ladder", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="add", choices=sorted(OPS))
    ap.add_argument("--rungs", default="a,b,c,d")
    ap.add_argument("--trace", default="scratchpad", help="comma list of one_line, scratchpad, partials, remaining (tasks.synth.scratchpad.STYLES); div also multiples")
    ap.add_argument("--digits", type=int, default=2, help="add/sub/mul: digits of the operands (mul: times one digit)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--align-steps", type=int, default=300)
    ap.add_argument("--align-lr", type=float, default=0.002)
    ap.add_argument("--voices", default="one", choices=["one", "params"],
                    help="spoken rungs: one voice, or a voice, rate and pitch per problem from synthesize.tts")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--max-new", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default="", help="builtin: training kinds and weights, e.g. short_digit:3,single_step:3,"
                    "long_digit:1,multi_step:1 (held-out problems: all four alike)")
    ap.add_argument("--probe-every", type=int, default=0, help="held-out probe every N steps of the TiS stages (0: off)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--length-group", type=int, default=0,
                    help="trainer.length_group (batches per length group; 1 = off; 0: params.yaml's)")
    ap.add_argument("--stream-mask", action="store_true", help="model.stream_mask: the reasoning never reads the response")
    ap.add_argument("--stream-clock", action="store_true", help="model.stream_clock (with the mask): the reasoning's own rope clock")
    ap.add_argument("--markers", type=lambda v: v.lower() in ("1", "true", "yes", "on"), default=None,
                    help="model.stream_markers on/off (default: params.yaml's)")
    ap.add_argument("--dims", default="", help="JSON overrides of model.tiny, e.g. '{\"hidden_size\": 256}'")
    ap.add_argument("--out", default="", help="JSON path (default bench/results/ladder-<task>.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="ladder-") as tmp:
        for style in args.trace.split(","):
            for rung in args.rungs.split(","):
                r = run_rung(rung, args.task, style, args, Path(tmp))
                results.append(r)
                heard = f", heard {100 * r['heard']:.0f} %" if "heard" in r else ""
                print(f"[ladder] {args.task} {style:10s} rung {rung} ({r['name']:11s}): {100 * r['accuracy']:5.1f} % "
                      f"held-out {r['per_kind'] if len(r['per_kind']) > 1 else ''}{heard}, {r['train_seconds']:.0f} s training",
                      flush=True)
    out = {"task": args.task, "args": vars(args), "results": results,
           "torch_threads": __import__("torch").get_num_threads()}
    path = Path(args.out) if args.out else RESULTS / f"ladder-{args.task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"{'task':5s} {'trace':11s} {'rung':4s} {'name':12s} {'acc %':>6s} {'train s':>8s}")
    for r in results:
        print(f"{r['task']:5s} {r['trace']:11s} {r['rung']:4s} {r['name']:12s} {100 * r['accuracy']:6.1f} "
              f"{r['train_seconds']:8.0f}")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()

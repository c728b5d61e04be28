"""Session benchmark: streaming vs HF generate, time to first spoken token and first audio (TiS vs
think-first), audio gaps with the thinker paced at 50 tokens/s, audio real-time factor.

    .venv/bin/python -m bench.bench_session [--model CKPT_DIR --codec CODEC_DIR] [--out bench/results/session.json]

Without ``--model`` a tiny Qwen2.5-Omni is built and trained here for a minute on a few generated
problems (thinker on both formats, talker on espeak speech of the responses through a WORLD codec
fitted here), so that both formats write structure, think-first ends its reasoning and the talker
speaks. Numbers are medians over the questions (and repeats for throughput).

- ``throughput``: thinker tokens/s of a text-only session vs ``model.thinker.generate`` (greedy, KV
  cache) on the same thinker, prompt and token count (``min_new_tokens`` = ``max_new_tokens`` = the
  session's count); goal ratio >= 0.95.
- ``latency.{tis,think_first}``: thinker positions, talker steps and ms to the first spoken token and
  the first audio chunk (goal, TiS: first audio after <= 12 positions and <= 40 talker steps).
- ``paced``: the thinker stepped at exactly N tokens/s (sleeping between positions; the talker and
  codec work of each position runs in that step), audio gaps counted as the session counts them
  (goal: 0 at 50 tokens/s).
- ``rtf``: session wall time / audio seconds, unpaced.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path


def tiny_engine(problems: int, steps: int, talker_steps: int, seed: int = 0):
    """A tiny model trained here (see the module docstring) and its codec, as an Engine; plus questions."""
    import torch

    from models.audio import SAMPLE_RATE
    from models.codec import WorldCodec
    from models.format import Schedule, build
    from models.omni import TinyDims, build_tiny
    from models.session import Engine
    from models.talker import talker_loss, thinker_states
    from models.tokenizer import control_ids, encode, text_prompt, train_bpe
    from models.tts import EspeakTTS
    from models.wave import resample
    from tasks.synth.builtin import generate_problems

    corpus = generate_problems(400, seed=123)
    tok = train_bpe((t for p in corpus for t in (p.question, p.reasoning, p.response)), 800)
    torch.manual_seed(seed)
    model = build_tiny(TinyDims(), tok, seed=seed)
    ids = control_ids(tok)
    probs = generate_problems(problems, seed=7, kinds=("short_digit", "single_step"))

    def pad_batch(layouts):
        t = max(len(l) for l in layouts)
        x = torch.tensor([l.input_ids + [tok.pad_token_id] * (t - len(l)) for l in layouts])
        am = torch.tensor([[1] * len(l) + [0] * (t - len(l)) for l in layouts])
        return x, am

    lay = {f: [build(f, text_prompt(tok, p.question), encode(tok, p.response), encode(tok, p.reasoning), ids,
                     Schedule(), delay_eos=True) for p in probs] for f in ("tis", "think_first")}
    both = lay["tis"] + lay["think_first"]
    x, am = pad_batch(both)
    labels = torch.tensor([[t if m else -100 for t, m in zip(l.input_ids, l.loss_mask)] + [-100] * (x.shape[1] - len(l))
                           for l in both])
    opt = torch.optim.AdamW(model.thinker.parameters(), lr=4e-3)
    for _ in range(steps):
        logits = model.thinker(input_ids=x, attention_mask=am).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    thinker_loss = loss.item()
    tts = EspeakTTS()
    speech = []
    for p in probs:
        w, sr = tts.synthesize(p.response)
        speech.append(resample(w, sr, SAMPLE_RATE)[: 3 * SAMPLE_RATE])
    codec = WorldCodec.fit(speech, SAMPLE_RATE, codebook_size=64, n_codebooks=3, iters=8, seed=seed)
    codes = [codec.flatten(codec.encode(w, SAMPLE_RATE)) for w in speech]
    model.thinker.requires_grad_(False)
    x, am = pad_batch(lay["tis"])
    roles = torch.tensor([[int(r) for r in l.roles] + [-1] * (x.shape[1] - len(l)) for l in lay["tis"]])
    hidden, embeds = thinker_states(model, input_ids=x, attention_mask=am)
    opt = torch.optim.AdamW(model.talker.parameters(), lr=3e-3)
    for _ in range(talker_steps):
        loss = talker_loss(model, hidden, embeds, roles, codes, codebooks=codec.codebooks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.requires_grad_(False)
    info = {"problems": problems, "thinker_steps": steps, "thinker_final_loss": round(thinker_loss, 4),
            "talker_steps": talker_steps, "talker_final_loss": round(loss.item(), 4)}
    return Engine(model, tok, codec), [p.question for p in probs], info


def throughput(engine, questions, max_new_tokens: int, repeats: int) -> dict:
    import torch

    from models.session import Options
    from models.tokenizer import text_prompt

    thinker = engine.model.thinker
    rows = []
    for q in questions:
        opts = Options(audio=False, reasoning=True, max_new_tokens=max_new_tokens)
        n = list(engine.session(text=q, options=opts))[-1].timings["thinker_positions"]
        x = torch.tensor([text_prompt(engine.tokenizer, q)], device=engine.device)
        ses, hf = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in engine.session(text=q, options=opts):
                pass
            ses.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = thinker.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                                       min_new_tokens=n, do_sample=False)
            hf.append(time.perf_counter() - t0)
            assert out.shape[1] - x.shape[1] == n
        rows.append({"tokens": n, "session_tokens_per_s": n / statistics.median(ses),
                     "generate_tokens_per_s": n / statistics.median(hf)})
    s = statistics.median(r["session_tokens_per_s"] for r in rows)
    g = statistics.median(r["generate_tokens_per_s"] for r in rows)
    return {"tokens": [r["tokens"] for r in rows], "session_tokens_per_s": round(s, 1),
            "generate_tokens_per_s": round(g, 1), "ratio": round(s / g, 3), "goal_ratio": 0.95}


def latency(engine, questions, fmt: str, max_new_tokens: int) -> dict:
    from models.session import Options

    keys = ("positions_to_first_text", "seconds_to_first_text", "positions_to_first_audio",
            "talker_steps_to_first_audio", "seconds_to_first_audio", "thinker_positions", "talker_steps",
            "audio_seconds", "seconds", "audio_gaps", "tokens_per_s")
    runs = []
    for q in questions:
        done = list(engine.session(text=q, options=Options(fmt=fmt, max_new_tokens=max_new_tokens)))[-1]
        runs.append({k: done.timings[k] for k in keys} | {"finish_reason": done.finish_reason})

    def med(k):
        v = [r[k] for r in runs if r[k] is not None]
        return round(statistics.median(v), 4) if v else None

    out = {k: med(k) for k in keys}
    out["ms_to_first_text"] = None if out["seconds_to_first_text"] is None else round(1000 * out["seconds_to_first_text"], 1)
    out["ms_to_first_audio"] = None if out["seconds_to_first_audio"] is None else round(1000 * out["seconds_to_first_audio"], 1)
    out["ended_with_eos"] = sum(r["finish_reason"] == "eos" for r in runs)
    out["runs"] = len(runs)
    out["rtf"] = round(sum(r["seconds"] for r in runs) / max(1e-9, sum(r["audio_seconds"] or 0 for r in runs)), 4)
    return out


def paced(engine, questions, rate: float, max_new_tokens: int) -> dict:
    """Step each session with thinker positions at exactly ``rate`` per second; report audio gaps."""
    from models.session import Options

    gaps, firsts = [], []
    for q in questions:
        s = engine.session(text=q, options=Options(max_new_tokens=max_new_tokens))
        t0 = time.perf_counter()
        i, done = 0, None
        while not s.done:
            if s.thinking:  # a thinker position is due every 1/rate seconds
                wait = t0 + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                i += 1
            for ev in s.step():
                if ev.type == "done":
                    done = ev
        gaps.append(done.timings["audio_gaps"])
        firsts.append(done.timings["seconds_to_first_audio"])
    return {"tokens_per_s": rate, "audio_gaps": gaps, "total_gaps": sum(g or 0 for g in gaps),
            "median_ms_to_first_audio": round(1000 * statistics.median(f for f in firsts if f is not None), 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint dir (model/ + tokenizer/); default: train a tiny one")
    ap.add_argument("--codec", default=None, help="codec dir for --model")
    ap.add_argument("--questions", nargs="*", default=None, help="questions for --model")
    ap.add_argument("--problems", type=int, default=4, help="tiny model: problems to train on")
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--talker-steps", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/results/session.json")
    args = ap.parse_args(argv)

    import torch

    from models.atomic import write_json
    from models.session import Engine

    t0 = time.perf_counter()
    if args.model:
        engine = Engine.load(args.model, args.codec)
        questions = args.questions or ["What is 51 minus 20?", "Ben has 6 apples and gets 3 more. How many now?"]
        info = {"model": args.model, "codec": args.codec}
    else:
        engine, questions, info = tiny_engine(args.problems, args.train_steps, args.talker_steps)
    info["setup_s"] = round(time.perf_counter() - t0, 1)
    engine.warmup()
    c = engine.codec
    result = {
        "machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": str(engine.device), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "model": info,
        "codec": {"frame_rate": c.frame_rate, "codebooks": c.codebooks, "first_block_frames": c.stream.first_block_frames,
                  "block_frames": c.stream.block_frames, "lookahead_frames": c.stream.lookahead_frames},
        "goal": {"positions_to_first_audio": 12, "talker_steps_to_first_audio": 40, "no_gaps_at_tokens_per_s": 50,
                 "session_vs_generate_ratio": 0.95},
        "throughput": throughput(engine, questions, args.max_new_tokens, args.repeats),
        "latency": {f: latency(engine, questions, f, args.max_new_tokens) for f in ("tis", "think_first")},
        "paced": [paced(engine, questions, r, args.max_new_tokens) for r in (50.0, 60.0, 40.0)],
    }
    print(__import__("json").dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    return result


if __name__ == "__main__":
    main()

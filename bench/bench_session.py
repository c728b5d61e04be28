"""Session benchmark: streaming vs HF generate, time to first spoken token and first audio (TiS vs
think-first), audio gaps with the thinker paced at 50 tokens/s, audio real-time factor.

    .venv/bin/python -m bench.bench_session [--model CKPT_DIR --codec CODEC_DIR] [--out bench/results/session.json]
    .venv/bin/python -m bench.bench_session --parts concurrency --concurrency 1 4 16 --out bench/results/concurrency.json

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
- ``concurrency``: N sessions (spoken answers) at once, stepped as the service steps them: ``batched``
  (``models.session.step_all``: one thinker forward and batched talker steps per round for all N)
  and ``sequential`` (each session's own ``step()`` in turn, one forward per session: how the service
  stepped before the model runner); aggregate thinker positions/s, first audio p50/p95 (seconds from
  the sessions' creation), errors. Goal (issue 20, CPU tiny, 16 streams): batched aggregate >= 4x one
  stream, p95 first audio <= 1.5 s. ``--parts concurrency`` runs only this.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path


def bench_tokenizer():
    """The tiny BPE tokenizer both bench models use, trained on 400 generated problems."""
    from models.tokenizer import train_bpe
    from tasks.synth.builtin import generate_problems

    corpus = generate_problems(400, seed=123)
    return train_bpe((t for p in corpus for t in (p.question, p.reasoning, p.response)), 800)


def tiny_engine(problems: int, steps: int, talker_steps: int, seed: int = 0):
    """A tiny model trained here (see the module docstring) and its codec, as an Engine; plus questions."""
    import torch

    from models.audio import SAMPLE_RATE
    from models.codec import WorldCodec
    from models.format import Schedule, build
    from models.omni import TinyDims, build_tiny
    from models.session import Engine
    from models.talker import talker_loss, thinker_states
    from models.tokenizer import control_ids, encode, text_prompt
    from models.tts import EspeakTTS
    from models.wave import resample
    from tasks.synth.builtin import generate_problems

    tok = bench_tokenizer()
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


# Shapes for --shape: random weights at a real model's size, to measure speed where no checkpoint is
# at hand (the session's cost depends on the shapes, not on what the weights learned). The thinker
# and audio encoder are Qwen2.5-Omni-3B's (its config.json: 2048 hidden, 36 layers, 16 heads / 2
# key-value heads, FFN 11008, vocabulary 151936; audio encoder 1280 x 32 layers); the talker is a
# 0.4B model (896 hidden, 24 layers, 14 heads / 2 key-value heads, FFN 4864); the codec is Mimi
# (24 kHz, 12.5 frames/s, 2048 codes per codebook) with 8 of its codebooks. "smoke" is the same
# path at a size a CPU test runs in seconds.
SHAPES = {
    "qwen2.5-omni-3b": dict(
        dims=dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                  intermediate_size=11008, max_position_embeddings=32768, audio_d_model=1280, audio_layers=32,
                  audio_heads=20, audio_ffn_dim=5120, talker_hidden_size=896, talker_layers=24, talker_heads=14),
        vocab_size=151936, talker_kv_heads=2, talker_ffn=4864, codebooks=8, mimi={},
    ),
    "smoke": dict(
        dims=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, audio_d_model=32, audio_layers=1, audio_heads=2, audio_ffn_dim=64,
                  talker_hidden_size=32, talker_layers=1, talker_heads=2),
        vocab_size=4096, talker_kv_heads=1, talker_ffn=64, codebooks=3,
        mimi=dict(sampling_rate=16000, hidden_size=32, num_filters=8, upsampling_ratios=[8, 5, 4],
                  num_hidden_layers=1, intermediate_size=64, num_attention_heads=2, num_key_value_heads=2,
                  head_dim=16, codebook_size=64, codebook_dim=16, num_quantizers=4,
                  vector_quantization_hidden_dimension=16, upsample_groups=32),
    ),
}


def shaped_engine(shape: str, device: str | None, dtype: str, seed: int = 0, codebooks: int | None = None):
    """A random-weight model of ``SHAPES[shape]`` (built on ``device`` in ``dtype``) with a random Mimi
    codec, as an Engine; plus questions. The tokenizer is the tiny BPE (ids past it decode to nothing)."""
    import torch
    from transformers import MimiConfig, MimiModel, Qwen2_5OmniForConditionalGeneration

    from models.codec import MimiCodec
    from models.omni import TinyDims, default_speaker, quiet_transformers, tiny_config
    from models.session import Engine
    from tasks.synth.builtin import generate_problems

    spec = SHAPES[shape]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    tok = bench_tokenizer()
    quiet_transformers()
    torch.manual_seed(seed)
    with torch.device(device):
        codec = MimiCodec(MimiModel(MimiConfig(**spec["mimi"])), n_codebooks=codebooks or spec["codebooks"])  # fp32
        dims = TinyDims(**spec["dims"], talker_vocab_size=codec.vocab_size + 4)
        cfg = tiny_config(dims, tok)
        cfg.thinker_config.text_config.vocab_size = spec["vocab_size"]
        cfg.talker_config.num_key_value_heads = spec["talker_kv_heads"]
        cfg.talker_config.intermediate_size = spec["talker_ffn"]
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dt)
        try:
            model = Qwen2_5OmniForConditionalGeneration(cfg)
        finally:
            torch.set_default_dtype(prev)
    model.speaker_map = {"default": default_speaker(model, tok)}
    count = lambda m: sum(p.numel() for p in m.parameters())
    th = model.thinker
    params = {"thinker_llm": count(th.model.language_model) + count(th.lm_head), "audio_encoder": count(th.model.audio_tower),
              "talker": count(model.talker), "codec": count(codec.model)}
    info = {"shape": shape, "weights": "random", "dtype": dtype, "params_millions": {k: round(v / 1e6, 1) for k, v in params.items()},
            "thinker_vocab": spec["vocab_size"], "codec": "mimi (random weights)"}
    questions = [p.question for p in generate_problems(3, seed=7, kinds=("short_digit", "single_step"))]
    return Engine(model.eval(), tok, codec, device), questions, info


def spoken_latency(engine, seconds: float, max_new_tokens: int, max_audio_seconds: float = 30.0) -> dict:
    """A spoken question of ``seconds`` (noise: the cost does not depend on what is said): prefill
    (audio encoder + prompt) and time to the first spoken token and the first audio chunk, TiS."""
    import numpy as np

    from models.session import Options

    wave = np.random.default_rng(0).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)
    runs = []
    for _ in range(3):
        done = list(engine.session(audio=(wave, 16000), options=Options(max_new_tokens=max_new_tokens, max_audio_seconds=max_audio_seconds)))[-1]
        runs.append(done.timings)
    pick = lambda k: round(1000 * statistics.median(r[k] for r in runs), 1) if all(r[k] is not None for r in runs) else None
    return {"audio_seconds_in": seconds, "prompt_tokens": len(engine.session(audio=(wave, 16000)).prompt_ids),
            "ms_to_first_text": pick("seconds_to_first_text"), "ms_to_first_audio": pick("seconds_to_first_audio")}


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


def latency(engine, questions, fmt: str, max_new_tokens: int, max_audio_seconds: float = 30.0) -> dict:
    from models.session import Options

    keys = ("positions_to_first_text", "seconds_to_first_text", "positions_to_first_audio",
            "talker_steps_to_first_audio", "seconds_to_first_audio", "thinker_positions", "talker_steps",
            "audio_seconds", "seconds", "audio_gaps", "tokens_per_s")
    runs = []
    for q in questions:
        done = list(engine.session(text=q, options=Options(fmt=fmt, max_new_tokens=max_new_tokens,
                                                                    max_audio_seconds=max_audio_seconds)))[-1]
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


def paced(engine, questions, rate: float, max_new_tokens: int, max_audio_seconds: float = 30.0) -> dict:
    """Step each session with thinker positions at exactly ``rate`` per second; report audio gaps."""
    from models.session import Options

    gaps, firsts = [], []
    for q in questions:
        s = engine.session(text=q, options=Options(max_new_tokens=max_new_tokens, max_audio_seconds=max_audio_seconds))
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


def concurrency(engine, questions, counts: list[int], max_new_tokens: int, max_audio_seconds: float) -> dict:
    """N spoken answers at once (greedy, one seed each), batched vs sequential; see the module docstring."""
    from models.session import Options, step_all

    def run(n: int, batched: bool) -> dict:
        sessions = [engine.session(text=questions[i % len(questions)],
                                   options=Options(max_new_tokens=max_new_tokens, max_audio_seconds=max_audio_seconds,
                                                   seed=i)) for i in range(n)]
        t0 = time.perf_counter()
        dones, errors, rounds = [None] * n, 0, 0
        while live := [i for i, s in enumerate(sessions) if not s.done]:
            rounds += 1
            batch = step_all([sessions[i] for i in live]) if batched else [sessions[i].step() for i in live]
            for i, events in zip(live, batch):
                for ev in events:
                    if ev.type == "done":
                        dones[i] = ev
                    elif ev.type == "error":
                        errors += 1
        wall = time.perf_counter() - t0
        positions = sum(d.timings["thinker_positions"] for d in dones if d)
        first = sorted(d.timings["seconds_to_first_audio"] for d in dones if d and d.timings["seconds_to_first_audio"])
        q = lambda p: round(first[min(len(first) - 1, int(p * len(first)))], 3) if first else None  # noqa: E731
        return {"sessions": n, "mode": "batched" if batched else "sequential", "seconds": round(wall, 3),
                "thinker_positions": positions, "positions_per_s": round(positions / wall, 1),
                "talker_steps": sum(d.timings["talker_steps"] or 0 for d in dones if d),
                "first_audio_p50_s": q(0.5), "first_audio_p95_s": q(0.95), "errors": errors, "rounds": rounds}

    rows = [run(n, b) for n in counts for b in (False, True)]
    one = next((r["positions_per_s"] for r in rows if r["sessions"] == 1 and r["mode"] == "sequential"), None)
    for r in rows:
        r["vs_one_stream"] = round(r["positions_per_s"] / one, 2) if one else None
    return {"max_new_tokens": max_new_tokens, "max_audio_seconds": max_audio_seconds, "rows": rows,
            "goal": {"sessions": 16, "vs_one_stream": 4.0, "first_audio_p95_s": 1.5, "errors": 0}}


def print_concurrency(c: dict) -> None:
    print(f"{'sessions':>8} {'mode':>10} {'seconds':>8} {'positions':>9} {'pos/s':>8} {'x one':>6} "
          f"{'1st audio p50':>13} {'p95':>6} {'errors':>6}")
    for r in c["rows"]:
        print(f"{r['sessions']:>8} {r['mode']:>10} {r['seconds']:>8.2f} {r['thinker_positions']:>9} "
              f"{r['positions_per_s']:>8.1f} {r['vs_one_stream']:>6} {r['first_audio_p50_s']!s:>13} "
              f"{r['first_audio_p95_s']!s:>6} {r['errors']:>6}")


PARTS = ("throughput", "latency", "paced", "spoken", "concurrency")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint dir (model/ + tokenizer/); default: train a tiny one")
    ap.add_argument("--codec", default=None, help="codec dir for --model")
    ap.add_argument("--questions", nargs="*", default=None, help="questions for --model")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None,
                    help="random weights at this size instead of a trained model (speed only)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="--shape weights' dtype")
    ap.add_argument("--spoken-seconds", type=float, default=4.0, help="length of the spoken question timed")
    ap.add_argument("--codebooks", type=int, default=None, help="--shape: Mimi codebooks the talker writes")
    ap.add_argument("--max-audio-seconds", type=float, default=30.0, help="talker stops here without eos")
    ap.add_argument("--paced-rates", type=float, nargs="+", default=[50.0, 60.0, 40.0])
    ap.add_argument("--problems", type=int, default=4, help="tiny model: problems to train on")
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--talker-steps", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="concurrent sessions to time")
    ap.add_argument("--concurrency-tokens", type=int, default=96, help="max_new_tokens of each concurrent session")
    ap.add_argument("--concurrency-audio-seconds", type=float, default=2.0, help="audio cap of each concurrent session")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    ap.add_argument("--out", default="bench/results/session.json")
    args = ap.parse_args(argv)

    import torch

    from models.atomic import write_json
    from models.session import Engine

    t0 = time.perf_counter()
    if args.model and args.shape:
        ap.error("--model and --shape exclude each other")
    if args.shape:
        engine, questions, info = shaped_engine(args.shape, args.device, args.dtype, codebooks=args.codebooks)
    elif args.model:
        engine = Engine.load(args.model, args.codec, device=args.device)
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
    }
    parts = set(args.parts)
    if "throughput" in parts:
        result["throughput"] = throughput(engine, questions, args.max_new_tokens, args.repeats)
    if "latency" in parts:
        result["latency"] = {f: latency(engine, questions, f, args.max_new_tokens, args.max_audio_seconds)
                             for f in ("tis", "think_first")}
    if "paced" in parts:
        result["paced"] = [paced(engine, questions, r, args.max_new_tokens, args.max_audio_seconds)
                           for r in args.paced_rates]
    if "spoken" in parts:
        result["spoken"] = spoken_latency(engine, args.spoken_seconds, 64, args.max_audio_seconds)
    if "concurrency" in parts:
        result["concurrency"] = concurrency(engine, questions, args.concurrency, args.concurrency_tokens,
                                            args.concurrency_audio_seconds)
    if engine.device.type == "cuda":
        result["cuda_max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(__import__("json").dumps({k: v for k, v in result.items() if k != "concurrency"}, indent=2))
    if "concurrency" in result:
        print_concurrency(result["concurrency"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    return result


if __name__ == "__main__":
    main()

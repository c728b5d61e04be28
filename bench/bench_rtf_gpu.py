"""GPU decode benchmark at Qwen2.5-Omni-3B shapes: per-position latency and real-time factor of the
model runner (models/runner.py) for 1 stream and a batch of 16, eager vs torch.compile.

    python -m bench.bench_rtf_gpu --json bench/results/rtf_gpu.json [--batches 1 16] [--steps 64]

Random weights (no download) in bf16 on CUDA: the thinker at Qwen2.5-Omni-3B's text shapes (hidden
2048, 36 layers, 16 heads / 2 key-value heads, FFN 11008, vocabulary 151936) and the talker at the
0.4B shapes bench/bench_session.py uses (896 hidden, 24 layers, 14 heads / 2 key-value heads, FFN
4864). Each decode step is one position of every stream: the forward over the slot caches, the head
and a greedy pick, timed with CUDA synchronisation after ``--warmup`` steps.

Modes:
- ``eager``: ``SlotLM.forward`` (the model's own HF forward over the slot caches; what sessions run);
- ``static``: ``StaticDecoder`` eager (static shapes, own layer loop);
- ``compiled``: ``StaticDecoder`` under ``torch.compile(mode=--compile-mode)`` (default
  ``reduce-overhead``: CUDA graphs). A compile failure is reported in the JSON, not fatal.

Real-time factor (seconds of compute per second of speech, per stream): the talker reads one thinker
position per codec frame and writes ``--codebooks`` ids per frame, so one second of speech costs
``--frame-rate`` thinker positions and ``frame_rate x codebooks`` talker steps (WORLD codec here:
50 frames/s x 4 ids). ``rtf_thinker`` counts the thinker alone; ``rtf`` both. Goals (issue 20): one
stream RTF <= 1 compiled; batch 16 aggregate >= 8x one stream.

Without a GPU it prints why and exits 0 without measuring (``--json`` then records the reason);
``--smoke`` runs the same code at tiny shapes on the CPU (tests/test_runner.py does, eager only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

THINKER_3B = dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                  intermediate_size=11008, vocab_size=151936)
TALKER_04B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864)


# --smoke: the same code at a size a CPU runs in seconds (checks the script where there is no GPU).
THINKER_SMOKE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=4096)
TALKER_SMOKE = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                    intermediate_size=64)


def build_model(device: str, dtype, talker: bool, smoke: bool = False):
    """A random Qwen2.5-Omni with the shapes above (audio tower and token2wav kept tiny: not timed)."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    from bench.bench_session import bench_tokenizer
    from models.omni import TinyDims, quiet_transformers, tiny_config

    quiet_transformers()
    tok = bench_tokenizer()
    t, tk = (THINKER_SMOKE, TALKER_SMOKE) if smoke else (THINKER_3B, TALKER_04B)
    dims = TinyDims(hidden_size=t["hidden_size"], num_hidden_layers=t["num_hidden_layers"],
                    num_attention_heads=t["num_attention_heads"], num_key_value_heads=t["num_key_value_heads"],
                    intermediate_size=t["intermediate_size"], max_position_embeddings=32768,
                    talker_hidden_size=tk["hidden_size"] if talker else 64,
                    talker_layers=tk["num_hidden_layers"] if talker else 1,
                    talker_heads=tk["num_attention_heads"] if talker else 2)
    cfg = tiny_config(dims, tok)
    cfg.thinker_config.text_config.vocab_size = t["vocab_size"]
    if talker:
        cfg.talker_config.num_key_value_heads = tk["num_key_value_heads"]
        cfg.talker_config.intermediate_size = tk["intermediate_size"]
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5OmniForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


def time_decode(part: str, model, batch: int, mode: str, prompt: int, steps: int, warmup: int,
                compile_mode: str) -> dict:
    """Mean seconds per decode step of ``batch`` streams (each at ``prompt`` positions to start)."""
    import torch

    from models.runner import SlotLM, StaticDecoder

    dev = next(model.parameters()).device
    cap = prompt + warmup + steps + 1
    if part == "thinker":
        lm = SlotLM.for_thinker(model.thinker, slots=batch, capacity=cap, max_len=cap)
        width = None
    else:
        lm = SlotLM.for_talker(model.talker, slots=batch, capacity=cap, max_len=cap)
        width = model.thinker.config.text_config.hidden_size
    g = torch.Generator(device=dev).manual_seed(0)
    slots = [lm.acquire() for _ in range(batch)]

    def inputs(b: int, t: int) -> dict:
        if width is None:
            return {"input_ids": torch.randint(5, 1000, (b, t), device=dev, generator=g)}
        return {"inputs_embeds": torch.randn(b, t, width, device=dev, generator=g, dtype=lm.dtype)}

    with torch.inference_mode():
        for s in slots:
            lm.forward([s], **inputs(1, prompt))
    step = lm.forward
    if mode != "eager":
        step = StaticDecoder(lm, batch, compile=compile_mode if mode == "compiled" else False)
    x = inputs(batch, 1)

    def one() -> None:
        with torch.inference_mode():
            h = step(slots, **x)
            lm.logits(h[:, -1]).argmax(-1)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):
        one()
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    sync()
    sec = (time.perf_counter() - t0) / steps
    del lm, step
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {"part": part, "batch": batch, "mode": mode, "ms_per_step": round(1000 * sec, 3),
            "positions_per_s": round(batch / sec, 1), "warmup_s": round(warm_s, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_rtf_gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--modes", nargs="+", choices=("eager", "static", "compiled"), default=["eager", "static", "compiled"])
    ap.add_argument("--compile-mode", default="reduce-overhead", help="torch.compile mode for 'compiled'")
    ap.add_argument("--prompt", type=int, default=128, help="positions each stream holds before timing")
    ap.add_argument("--steps", type=int, default=64, help="timed decode steps")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps first (compilation, CUDA graph capture)")
    ap.add_argument("--frame-rate", type=float, default=50.0, help="codec frames per second of speech")
    ap.add_argument("--codebooks", type=int, default=4, help="talker ids per codec frame")
    ap.add_argument("--no-talker", action="store_true", help="time the thinker only")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the script, measures nothing real")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.smoke:
        msg = "no CUDA GPU here (torch.cuda.is_available() is False): bench_rtf_gpu measures GPU decoding only"
        print(msg)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"skipped": msg}, indent=2))
        return {"skipped": msg}

    t0 = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.smoke
    model = build_model("cuda" if cuda else "cpu", torch.bfloat16 if cuda else torch.float32,
                        talker=not args.no_talker, smoke=args.smoke)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    th = model.thinker
    result: dict = {
        "gpu": torch.cuda.get_device_name() if cuda else None, "torch": torch.__version__,
        "dtype": "bf16" if cuda else "fp32", "smoke": args.smoke,
        "thinker": (THINKER_SMOKE if args.smoke else THINKER_3B)
        | {"params_millions": round((count(th.model.language_model) + count(th.lm_head)) / 1e6, 1)},
        "talker": None if args.no_talker else (TALKER_SMOKE if args.smoke else TALKER_04B)
        | {"params_millions": round(count(model.talker) / 1e6, 1)},
        "prompt": args.prompt, "steps": args.steps, "frame_rate": args.frame_rate, "codebooks": args.codebooks,
        "compile_mode": args.compile_mode, "build_s": round(time.perf_counter() - t0, 1), "rows": [], "errors": [],
    }
    parts = ["thinker"] + ([] if args.no_talker else ["talker"])
    for part in parts:
        for mode in args.modes:
            for b in args.batches:
                try:
                    row = time_decode(part, model, b, mode, args.prompt, args.steps, args.warmup, args.compile_mode)
                except Exception as e:  # e.g. a compile failure: keep the other numbers
                    result["errors"].append({"part": part, "mode": mode, "batch": b,
                                             "error": f"{type(e).__name__}: {str(e)[:2000]}"})
                    print(f"{part} {mode} batch {b}: failed: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
                    torch._dynamo.reset()
                    continue
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
    # Real-time factor per stream and speed-up of the batch, per mode.
    ms = {(r["part"], r["mode"], r["batch"]): r["ms_per_step"] for r in result["rows"]}
    summary = []
    for mode in args.modes:
        for b in args.batches:
            t = ms.get(("thinker", mode, b))
            if t is None:
                continue
            tk = ms.get(("talker", mode, b))
            s = {"mode": mode, "batch": b, "thinker_ms": t, "talker_ms": tk,
                 "rtf_thinker": round(t * args.frame_rate / 1000, 3),
                 "rtf": None if tk is None else round((t + args.codebooks * tk) * args.frame_rate / 1000, 3)}
            one = ms.get(("thinker", mode, 1))
            s["thinker_speedup_vs_one_stream"] = round(b * one / t, 2) if one else None
            summary.append(s)
    result["summary"] = summary
    result["goal"] = {"rtf_one_stream_compiled": 1.0, "batch16_vs_one_stream": 8.0}
    result["cuda_max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    print(f"{'mode':>9} {'batch':>5} {'thinker ms':>10} {'talker ms':>9} {'rtf thinker':>11} {'rtf':>6} {'x one':>6}")
    for s in summary:
        print(f"{s['mode']:>9} {s['batch']:>5} {s['thinker_ms']:>10} {s['talker_ms']!s:>9} {s['rtf_thinker']:>11} "
              f"{s['rtf']!s:>6} {s['thinker_speedup_vs_one_stream']!s:>6}")
    if args.json:
        from models.atomic import write_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.json), result)
    return result


if __name__ == "__main__":
    main()

"""Benchmark synthesis: TTS real-time factor, the text rules (speak a question and read its numbers
back) per second, and samples/s of the synthesize stage on 1 vs 2 Ray workers.

    python bench/bench_synth.py [--problems 200] [--sentences 50]   # JSON to bench/results/synth.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tts_rtf(n: int) -> dict:
    from models.tts import EspeakTTS
    from tasks.synth.builtin import generate_problems
    from tasks.synth.verbalize import speakable

    tts = EspeakTTS()
    tts.synthesize("warm up")  # the first call loads espeak's data (~1 s), not part of the steady state
    texts = [speakable(p.question) for p in generate_problems(n, seed=123)]
    t0 = time.perf_counter()
    audio = sum(len(tts.synthesize(t)[0]) / 16000 for t in texts)
    dt = time.perf_counter() - t0
    return {"sentences": n, "audio_seconds": round(audio, 2), "wall_seconds": round(dt, 3), "rtf": round(dt / audio, 5)}


def text_rules_rate(n: int) -> dict:
    """speakable() + the words-to-number read-back on generated questions and responses (no TTS)."""
    from tasks.synth.builtin import generate_problems
    from tasks.synth.readback import mismatch
    from tasks.synth.verbalize import speakable

    texts = [t for p in generate_problems(n, seed=321) for t in (p.question, p.response)]
    t0 = time.perf_counter()
    bad = sum(bool(mismatch(t, speakable(t))) for t in texts)
    dt = time.perf_counter() - t0
    return {"texts": len(texts), "wall_seconds": round(dt, 3), "texts_per_second": round(len(texts) / dt, 1),
            "mismatches": bad}


def stage_rate(problems: int, workers: int, tok) -> dict:
    from models.format import Schedule
    from tasks import synthesize
    from tasks.core.params import load_params

    class P:
        schedule = Schedule(2, 8)

    cfg = load_params(overrides={"synthesize": {
        "sources": [{"kind": "builtin", "limit": problems}],
        "ray": {"num_cpus": workers, "shards": max(2, workers * 4), "batch_size": 32}}}).synthesize
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        stats = synthesize.run(P(), cfg, out_dir=Path(d) / "synth", tokenizer=tok, use_ray=True)
        wall = time.perf_counter() - t0
    return {"workers": workers, "problems": problems, "kept": stats["kept"], "wall_seconds": round(wall, 2),
            "samples_per_second": round(problems / wall, 2), "stage_seconds": stats["seconds"],
            "audio_hours": stats["audio_hours"], "tts_rtf_in_stage": stats["tts_rtf"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--sentences", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "synth.json"))
    a = ap.parse_args()
    from models.tokenizer import train_bpe
    from tasks.synth.builtin import generate_problems

    probs = generate_problems(800, seed=10_000)
    tok = train_bpe((t for q in probs for t in (q.question, q.reasoning, q.response)), 1000)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "tts": tts_rtf(a.sentences),
        "text_rules": text_rules_rate(a.problems),
        "ray": [stage_rate(a.problems, w, tok) for w in (1, 2)],
    }
    r1, r2 = result["ray"]
    result["speedup_2_vs_1"] = round(r2["samples_per_second"] / r1["samples_per_second"], 2)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

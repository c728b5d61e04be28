"""Evaluate-stage benchmark: how long ``evaluate@tis`` + ``evaluate@think_first`` + ``compare`` take at
params.yaml's ``evaluate`` settings, on the tiny model (the pipeline's budget for them is ~3 minutes).

    .venv/bin/python -m bench.bench_evaluate [--out bench/results/evaluate.json] [--trained-only]

Two models, both built on ``tests/audio_data.tiny_setup()`` (tiny init checkpoint, 16 spoken problems,
a WORLD codec; the proxy is filtered against those problems):

- ``untrained``: the random init checkpoint. It never ends an answer, so every question runs to
  ``max_new_tokens`` and every spoken answer to ``max_audio_seconds``: the worst case.
- ``trained``: the thinker trained by the ``text_tis`` loop (350 steps of 8, both formats) on the 16
  problems until it memorises them, as tests/test_evaluate_stage.py does; it ends its answers (eos),
  as a trained pipeline model does, though it answers the held-out proxy questions wrongly.

Wall seconds per run (model load, proxy made and spoken, every answer decoded, outputs written) and
the answers' positions; JSON to bench/results/evaluate.json.
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results/evaluate.json")
    ap.add_argument("--trained-only", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    from audio_data import tiny_setup
    from models.drift import tokenize_sample
    from models.format import Schedule
    from tasks.compare import run as compare
    from tasks.core.dataset import write_dataset
    from tasks.core.params import load_params
    from tasks.core.trainer import train
    from tasks.evaluate.workflow import run as evaluate
    from tasks.synth.builtin import generate_problems

    t0 = time.time()
    tiny = tiny_setup()
    root = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    p = load_params()
    results: dict = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "evaluate_params": json.loads(json.dumps(p.evaluate, default=lambda o: o.__dict__)),
                     "setup_s": round(time.time() - t0, 1), "models": {}}
    models = {}
    if not args.trained_only:
        models["untrained"] = {f: tiny.init for f in ("tis", "think_first")}
    probs = generate_problems(16, seed=77)
    rows = [{**pr.to_dict(), "spoken_question": pr.question,
             **vars(tokenize_sample(tiny.tok, pr.question, pr.response, pr.reasoning, Schedule()))} for pr in probs]
    write_dataset(root / "data", {"train": rows, "validation": rows}, {"problems": 16})
    tp = load_params(overrides={"text_tis": {"steps": 350, "batch_size": 8, "lr": 0.003, "warmup_steps": 5,
                                             "max_len": 400, "spoken_fraction": 0.0},
                                "trainer": {"log_every": 1000, "checkpoint_every": 1000, "keep_checkpoints": 1}})
    t = time.time()
    models["trained"] = {}
    for fmt in ("tis", "think_first"):
        train("text_tis", tp, tp.text_tis, root / "data", tiny.init, root / "trained" / fmt, fmt=fmt)
        models["trained"][fmt] = root / "trained" / fmt
    results["train_s"] = round(time.time() - t, 1)
    for name, dirs in models.items():
        out = root / "reports" / name
        res: dict = {}
        total = time.time()
        for fmt in ("tis", "think_first"):
            t = time.time()
            r = evaluate(p, fmt, model_dir=dirs[fmt], codec_dir=tiny.codec, data_dir=tiny.data, out_dir=out / fmt)
            m = r.metrics
            res[fmt] = {"seconds": round(time.time() - t, 1), "answers": m["evaluate/answers"],
                        "accuracy": m["overall/accuracy"], "eos_rate": m["overall/eos_rate"],
                        "thinker_positions": m["overall/thinker_positions"], "tokens_per_s": m["overall/tokens_per_s"],
                        "positions_to_first_text": m.get("overall/positions_to_first_text"),
                        "seconds_to_first_text": m.get("overall/seconds_to_first_text"),
                        "positions_to_first_audio": m.get("overall/positions_to_first_audio"),
                        "seconds_to_first_audio": m.get("overall/seconds_to_first_audio")}
            print(f"{name} {fmt}: {res[fmt]}", flush=True)
        t = time.time()
        compare(p, reports=out, out_dir=out / "compare")
        res["compare_seconds"] = round(time.time() - t, 1)
        res["total_seconds"] = round(time.time() - total, 1)
        print(f"{name}: both evaluate runs + compare in {res['total_seconds']} s (in-process; the pipeline adds "
              "~2 x the interpreter + torch start-up, a few seconds each)", flush=True)
        results["models"][name] = res
    from models.atomic import write_json

    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

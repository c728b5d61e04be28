"""Training benchmarks, each against a baseline in the same run.

1. ``overhead``: the pipeline trainer (DeepSpeed engine, lazy data, checkpoints, logging) against a bare
   torch loop on the same tiny model, batches and steps: tokens/s and their ratio.
2. ``scaling``: the trainer on 2,000 and on 200,000 training rows (the same rows repeated), same model
   and steps, each in a fresh process: steps/s and peak RSS. The data path reads rows lazily, so the
   goal is a speed ratio >= 0.9 and RSS growth <= 10 %.

    .venv/bin/python -m bench.bench_train [--steps 30] [--batch 8] [--stage text_tis] [--only overhead|scaling]

Prints JSON and writes bench/results/train.json. CPU only here: the 3B MFU measurement needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train.json"


def bare_loop(stage: str, p, sp, data_dir: Path, init_dir: Path, fmt: str = "tis") -> dict:
    """The same steps as the trainer, with nothing but torch: forward, backward, clip, AdamW, schedule."""
    import torch
    from models.losses import LOSSES
    from models.modules import set_trainable
    from models.omni import load_checkpoint
    from tasks.core import checkpoint as ck
    from tasks.core.examples import BatchStream, StageData, collate
    from tasks.core.stages import for_params
    from tasks.core.trainer import lr_lambda

    spec = for_params(stage, p)
    src = ck.latest(init_dir)
    model, tok = load_checkpoint(src, torch.float32)
    data = StageData(data_dir, "train", tok, p, spec, sp, fmt)
    stream = BatchStream(data, sp.batch_size, p.seed)
    set_trainable(model, spec.trainable)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=sp.lr, weight_decay=sp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(sp))
    loss_fn = LOSSES[spec.t.loss]
    torch.manual_seed(p.seed)
    model.train()
    tokens, history = 0, []
    t0 = time.time()
    for _ in range(sp.steps):
        mb = data.load_features(stream.next_batch())
        total = max(1, sum(e.n_targets for e in mb))
        batch = collate(mb, tok.pad_token_id)
        loss = loss_fn(model, batch) / total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, p.trainer.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        history.append(round(loss.item(), 5))
    el = time.time() - t0
    return {"tokens_per_s": tokens / el, "seconds": el, "tokens": tokens, "losses": history}


def overhead(tiny, stage: str, steps: int, batch: int) -> dict:
    import torch

    from tasks.core.trainer import train

    p = replace(tiny.p, trainer=replace(tiny.p.trainer, log_every=10**6, checkpoint_every=10**6))
    sp = replace(p.stage(stage), steps=steps, batch_size=batch, lr=1e-3, warmup_steps=2, max_len=1024)
    bare = bare_loop(stage, p, sp, tiny.data, tiny.init)
    with tempfile.TemporaryDirectory() as d:
        res = train(stage, p, sp, tiny.data, tiny.init, Path(d) / "out", codec_dir=tiny.codec)
    losses = [l for _, l in res.history]
    return {
        "stage": stage, "steps": steps, "batch_size": batch, "threads": torch.get_num_threads(),
        "trainer_tokens_per_s": round(res.tokens_per_s, 1), "bare_tokens_per_s": round(bare["tokens_per_s"], 1),
        "ratio": round(res.tokens_per_s / bare["tokens_per_s"], 3),
        "max_loss_diff": max(abs(a - b) for a, b in zip(losses, bare["losses"])),
    }


def repeated_dataset(src: Path, out: Path, rows: int) -> Path:
    """``src``'s training rows repeated (with fresh ids) up to ``rows``; validation and audio shared."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.core.dataset import ROW_GROUP

    out.mkdir(parents=True)
    t = pq.read_table(src / "train.parquet")
    reps = -(-ROW_GROUP // t.num_rows)
    block = pa.concat_tables([t] * reps)  # about one row group of repeated rows
    with pq.ParquetWriter(out / "train.parquet", t.schema) as w:
        done = 0
        while done < rows:
            part = block.slice(0, min(block.num_rows, rows - done))
            ids = pa.array([f"r{done + i}" for i in range(part.num_rows)])
            w.write_table(part.set_column(part.schema.get_field_index("id"), "id", ids), row_group_size=ROW_GROUP)
            done += part.num_rows
    shutil.copy(src / "validation.parquet", out / "validation.parquet")
    (out / "audio").symlink_to(src / "audio")
    return out


CHILD = """
import json, re, sys, time
from dataclasses import replace
from pathlib import Path
from tasks.core.params import load_params
from tasks.core.trainer import train
stage, data, out, steps, batch, init, codec = sys.argv[1], *map(Path, sys.argv[2:4]), int(sys.argv[4]), int(sys.argv[5]), *map(Path, sys.argv[6:8])
p = load_params(overrides={"trainer": {"log_every": 10**6, "checkpoint_every": 10**6}})
sp = replace(p.stage(stage), steps=steps, batch_size=batch, lr=1e-3, warmup_steps=2, max_len=1024)
t0 = time.time()
res = train(stage, p, sp, data, init, out, codec_dir=codec)
print("RESULT " + json.dumps({"steps_per_s": steps / res.seconds, "loop_seconds": res.seconds,
                              "total_seconds": time.time() - t0,
                              # VmHWM: this process's own peak (ru_maxrss would include the parent's, inherited at fork)
                              "peak_rss_mb": int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024}))
"""


def child_env() -> dict[str, str]:
    """Our environment without the rank variables the in-process run left (the child would reuse its port)."""
    import os

    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in os.environ.items() if k not in drop}


def scaling(tiny, stage: str, steps: int, batch: int, sizes=(2_000, 200_000)) -> dict:
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            t0 = time.time()
            data = repeated_dataset(tiny.data, Path(d) / f"rows{n}", n)
            made = time.time() - t0
            r = subprocess.run([sys.executable, "-c", CHILD, stage, str(data), str(Path(d) / f"out{n}"), str(steps),
                                str(batch), str(tiny.init), str(tiny.codec)], capture_output=True, text=True, cwd=ROOT,
                               env=child_env())
            line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
            if r.returncode or line is None:
                raise RuntimeError(f"scaling run with {n} rows failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
            runs[n] = {**json.loads(line[7:]), "dataset_seconds": round(made, 1),
                       "parquet_mb": round((data / "train.parquet").stat().st_size / 2**20, 1)}
            print(f"[bench] {n} rows: {runs[n]}", flush=True)
    small, big = runs[sizes[0]], runs[sizes[1]]
    return {"stage": stage, "steps": steps, "batch_size": batch, "runs": {str(k): v for k, v in runs.items()},
            "speed_ratio": round(big["steps_per_s"] / small["steps_per_s"], 3),
            "rss_growth": round(big["peak_rss_mb"] / small["peak_rss_mb"] - 1, 3),
            "goal": "speed_ratio >= 0.9, rss_growth <= 0.10"}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--stage", default="text_tis")
    ap.add_argument("--only", choices=["overhead", "scaling"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(ROOT / "tests"))
    from audio_data import tiny_setup

    tiny = tiny_setup()
    out = {"device": "cpu", "machine": platform.processor() or platform.machine(),
           "note": "tiny model on CPU; no GPU was available for the 3B MFU measurement"}
    if args.only in (None, "overhead"):
        out["overhead"] = overhead(tiny, args.stage, args.steps, args.batch)
    if args.only in (None, "scaling"):
        out["scaling"] = scaling(tiny, args.stage, args.steps, args.batch)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Two stages one after another on every core, against the same two side by side on a share each.

What ``flow.parallel`` buys: the flow runs stages that are independent in DVC's graph at once (the two formats'
chains, the codec beside align and pretrain), each lent ``cores // running`` torch threads. On a small CPU a tiny
model's step does not use two cores well, so two one-thread runs at once finish sooner than two two-thread runs in
turn. This bench trains ``--stage`` for ``--steps`` steps for both formats from a finished pipeline's checkpoints
(``--root``), in fresh processes: first in turn with every core, then side by side, each following its share
(``OMNI_TIS_CPU_SHARE``, as the flow lends it). Prints and writes the seconds of both and their ratio.

    .venv/bin/python -m bench.bench_parallel --root . --stage text_tis --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "parallel.json"

CHILD = """
import sys, time, tempfile
from pathlib import Path
from tasks.core.checkpoint import latest
from tasks.core.cpu import CpuShare
from tasks.core.params import load_params
from tasks.core.stages import spec
from tasks.core.trainer import train
from bench.bench_stage import overrides
root, stage, steps, fmt = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
CpuShare().apply()
p = load_params(root / "params.yaml", overrides([f"{stage}.steps={steps}", "trainer.checkpoint_every=100000"]))
st = spec(stage)
up = root / "checkpoints" / st.upstream
if st.upstream != "init_model" and spec(st.upstream).per_format:
    up = up / fmt
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.time()
    train(stage, p, p.stage(stage), root / "data" / "synthesize", latest(up), Path(tmp) / "out", fmt=fmt,
          codec_dir=root / "checkpoints" / "codec")
    print("TRAIN_SECONDS", round(time.time() - t0, 2))
"""


def _start(root: Path, stage: str, steps: int, fmt: str, share: Path | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMNI_TIS_CPU_SHARE", None)
    if share is not None:
        env["OMNI_TIS_CPU_SHARE"] = str(share)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), stage, str(steps), fmt], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"training failed (exit {proc.returncode}):\n{out[-3000:]}")
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("TRAIN_SECONDS")))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_parallel", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(ROOT), help="a repository where make pipeline ran (data/, checkpoints/)")
    ap.add_argument("--stage", default="text_tis", choices=["text_tis", "acoustic_tis", "talker"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    from tasks.core.cpu import machine_cores, write_share

    root = Path(args.root).resolve()
    if not (root / "data" / "synthesize" / "train.parquet").exists():
        raise SystemExit(f"{root} has no data/synthesize: run make pipeline there first (or pass --root)")
    cores = machine_cores()  # what the flow lends out
    fmts = ("tis", "think_first")
    t0 = time.time()
    in_turn = {}
    for fmt in fmts:  # one after another, every core each (torch's default threads)
        in_turn[fmt] = _finish(_start(root, args.stage, args.steps, fmt, None))
    in_turn_wall = time.time() - t0
    with tempfile.TemporaryDirectory() as tmp:
        shares = {fmt: Path(tmp) / fmt for fmt in fmts}
        for s in shares.values():
            write_share(s, max(1, cores // 2))
        t0 = time.time()
        procs = {fmt: _start(root, args.stage, args.steps, fmt, shares[fmt]) for fmt in fmts}
        beside = {}
        pending = dict(procs)
        while pending:  # the one left alone gets every core back, as the flow lends it
            for fmt, pr in list(pending.items()):
                if pr.poll() is not None:
                    beside[fmt] = _finish(pr)
                    del pending[fmt]
                    for other in pending:
                        write_share(shares[other], cores)
            time.sleep(0.2)
        beside_wall = time.time() - t0
    res = {"stage": args.stage, "steps": args.steps, "cores": cores, "root": str(root),
           "in_turn": {"wall_s": round(in_turn_wall, 1), "train_s": in_turn},
           "side_by_side": {"wall_s": round(beside_wall, 1), "train_s": beside, "threads_each": max(1, cores // 2)},
           "speedup": round(in_turn_wall / beside_wall, 3)}
    print(json.dumps(res, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()

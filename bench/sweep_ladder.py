"""Run many ladder configurations side by side (one process each, a few CPU threads each) and tabulate.

A sweep changes one thing at a time against a baseline in the same run; every configuration is a
``bench.bench_ladder`` command line. Each runs in its own process with ``--threads`` torch threads
(``OMP_NUM_THREADS`` too), ``--jobs`` at once, so a 16-core machine runs eight 2-core configurations
in the time of one, each at the speed of the 2-core machine the pipeline targets.

    .venv/bin/python -m bench.sweep_ladder --grid bench/grids/ladder.json --jobs 8 --threads 2

``--grid``: a JSON object ``{"name": ["--task", "add", "--rungs", "c", ...], ...}``. Writes one JSON per
configuration and ``sweep.json`` (all results) to ``--out`` (default bench/results/sweep), and prints
the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(name: str, argv: list[str], out: Path, threads: int, timeout: float | None = None) -> dict:
    path = out / f"{name}.json"
    log = out / f"{name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    with open(log, "w") as f:
        try:
            rc = subprocess.call([sys.executable, "-m", "bench.bench_ladder", *argv, "--threads", str(threads),
                                  "--out", str(path)], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:  # subprocess.call kills the child before raising
            rc = 124
            f.write(f"\n[sweep] stopped after {timeout:.0f} s (--timeout)\n")
    text = log.read_text()
    res = json.loads(path.read_text()) if rc == 0 and path.exists() else {"error": text[-2000:]}
    # the held-out probe's curve (bench_ladder --probe-every), kept also when a run was stopped
    res["probes"] = [ln.split("probe: ", 1)[1] for ln in text.splitlines() if "probe: " in ln]
    res.update(name=name, argv=argv, rc=rc, wall_seconds=round(time.time() - t0, 1))
    print(f"[sweep] {name}: rc {rc}, {res['wall_seconds']:.0f} s", flush=True)
    return res


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m bench.sweep_ladder", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", required=True, help="JSON file: {name: [bench_ladder args...]}")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep"))
    ap.add_argument("--timeout", type=float, default=0, help="stop a configuration after this many seconds (0: never)")
    args = ap.parse_args(argv)
    grid = json.loads(Path(args.grid).read_text())
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise SystemExit(f"{args.grid}: expected a JSON object of name -> list of bench_ladder arguments")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda kv: run_one(kv[0], kv[1], out, args.threads, args.timeout or None), grid.items()))
    (out / "sweep.json").write_text(json.dumps(results, indent=2))
    print(f"{'config':28s} {'trace':11s} {'rung':4s} {'acc %':>6s} {'train s':>8s}  per kind")
    for r in results:
        if r["rc"] != 0:
            print(f"{r['name']:28s} FAILED: {r['error'][-300:]!r}")
            continue
        for x in r["results"]:
            print(f"{r['name']:28s} {x['trace']:11s} {x['rung']:4s} {100 * x['accuracy']:6.1f} {x['train_seconds']:8.0f}  "
                  f"{x.get('per_kind') or ''}")
    print(f"wrote {out / 'sweep.json'}")
    return results


if __name__ == "__main__":
    main()

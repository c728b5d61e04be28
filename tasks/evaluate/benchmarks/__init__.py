"""Benchmarks for the ``evaluate`` stage, one module each, and the registry that names them.

``evaluate.benchmark`` in params.yaml is ``name`` or ``name:argument``:

    proxy                        the offline proxy (proxy.py; held-out generator seeds)
    spoken_mqa:<hub id | path>   Spoken-MQA from the hub or a local copy (spoken_mqa.py); a bare hub id
                                 or path ("amao0o0/spoken-mqa", "data/benchmark") means the same
    gsm8k:<test.jsonl>           GSM8K test, spoken (gsm8k.py)
    svamp:<SVAMP.json>           SVAMP, spoken (svamp.py)
    local:<file>?question=q&answer=a[&split=s]   any JSONL/JSON/parquet with named fields (local.py)

Adding one: a module with a class that has ``name``, ``scoring`` and ``items(request)`` (see
``base.Benchmark``), and its line in ``BENCHMARKS`` (or ``register`` at run time).

    python -m tasks.evaluate.benchmarks proxy OUT_DIR --n 25 --training data/synthesize
    python -m tasks.evaluate.benchmarks show OUT_DIR            # or a hub id / local copy
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from tasks.evaluate.benchmarks import base
from tasks.evaluate.benchmarks.base import (AUDIOBENCH_SUBSET_SEED, DEFAULT_VOICES, EXTRA_SPLITS, FIELDS, HUB_ID,
                                            INSTRUCTION, MAX_PROXY_SEED, PROXY_KINDS, PROXY_SEED_BASE, SAMPLE_RATE,
                                            SPLITS, Benchmark, BenchmarkError, Item, Request, by_split,
                                            load_training_questions, speak_records, training_keys)
from tasks.evaluate.benchmarks.gsm8k import GSM8K
from tasks.evaluate.benchmarks.local import Local
from tasks.evaluate.benchmarks.proxy import Proxy, make_proxy, proxy_questions, proxy_seed
from tasks.evaluate.benchmarks.spoken_mqa import SpokenMQA, audiobench_subset, load_benchmark, write_benchmark
from tasks.evaluate.benchmarks.svamp import SVAMP

log = logging.getLogger("evaluate")
__all__ = ["AUDIOBENCH_SUBSET_SEED", "BENCHMARKS", "DEFAULT_VOICES", "EXTRA_SPLITS", "FIELDS", "HUB_ID", "INSTRUCTION",
           "MAX_PROXY_SEED", "PROXY_KINDS", "PROXY_SEED_BASE", "SAMPLE_RATE", "SPLITS", "GSM8K", "SVAMP", "Benchmark",
           "BenchmarkError", "Item", "Local", "Proxy", "Request", "SpokenMQA", "audiobench_subset", "base", "by_split",
           "load", "load_benchmark", "load_training_questions", "main", "make_extra", "make_proxy", "proxy_questions",
           "proxy_seed", "register", "resolve", "speak_records", "training_keys", "write_benchmark"]

# name -> class: one line per benchmark.
BENCHMARKS: dict[str, type] = {
    "proxy": Proxy,
    "spoken_mqa": SpokenMQA,
    "gsm8k": GSM8K,
    "svamp": SVAMP,
    "local": Local,
}


def register(name: str, cls: type) -> None:
    """Add a benchmark class under ``name`` (a plug-in outside this package, or a test's)."""
    if not isinstance(cls(), Benchmark):
        raise TypeError(f"{cls.__name__} is not a Benchmark: it needs name, scoring and items(request)")
    BENCHMARKS[name] = cls


def resolve(spec: str) -> tuple[Benchmark, str]:
    """``evaluate.benchmark`` -> (the benchmark, its argument). A spec whose name is not registered is
    a Spoken-MQA hub id or local path ("amao0o0/spoken-mqa", "data/benchmark")."""
    name, sep, argument = str(spec).partition(":")
    if name in BENCHMARKS:
        return BENCHMARKS[name](), argument
    if sep and re.fullmatch(r"[a-z_][a-z0-9_]*", name):  # a hub id or path never looks like "name:..."
        raise BenchmarkError(f"unknown benchmark {name!r} in evaluate.benchmark {spec!r}; registered: "
                             f"{', '.join(sorted(BENCHMARKS))}")
    return SpokenMQA(), str(spec)


def load(spec: str, splits: Sequence[str] = SPLITS, limit_per_split: int = 0, *, seed: int = 0,
         training: Iterable[str] | str | Path | None = None) -> dict[str, list[Item]]:
    """``{split: [Item]}`` of the benchmark ``spec`` names; every item carries the benchmark's scoring."""
    import dataclasses

    bench, argument = resolve(spec)
    items = bench.items(Request(argument, tuple(splits), limit_per_split, seed, training))
    if bench.scoring != "audiobench_math":
        items = {s: [dataclasses.replace(it, scoring=bench.scoring) for it in its] for s, its in items.items()}
    return items


def make_extra(kind: Literal["gsm8k", "svamp"], path: str | Path, limit: int = 0, **kw) -> list[Item]:
    """GSM8K test or SVAMP as split ``kind`` (``speak_records`` with that module's parser)."""
    from tasks.evaluate.benchmarks import gsm8k, svamp

    parse = {"gsm8k": gsm8k.parse, "svamp": svamp.parse}.get(kind)
    if parse is None:
        raise BenchmarkError(f"unknown extra benchmark {kind!r}; choose from {list(EXTRA_SPLITS)}")
    return speak_records(kind, parse, path, limit, **kw)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.evaluate.benchmarks", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("proxy", help="make the offline proxy (and optional GSM8K/SVAMP splits) and write it")
    mk.add_argument("out", type=Path)
    mk.add_argument("--n", type=int, default=25, help="questions per split")
    mk.add_argument("--training", default="data/synthesize", help="synthesize output dir (questions to exclude)")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--gsm8k", default="", help="GSM8K test .jsonl to add as split gsm8k")
    mk.add_argument("--svamp", default="", help="SVAMP .json to add as split svamp")
    mk.add_argument("--extra-limit", type=int, default=0)
    sh = sub.add_parser("show", help="print split sizes and one item of a benchmark")
    sh.add_argument("source")
    sh.add_argument("--splits", nargs="+", default=list(SPLITS))
    sh.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        _run_cli(args)
    except BenchmarkError as e:
        raise SystemExit(f"error: {e}") from None


def _run_cli(args: argparse.Namespace) -> None:
    if args.cmd == "proxy":
        items = make_proxy(args.n, training=args.training, seed=args.seed)
        for kind in EXTRA_SPLITS:
            if getattr(args, kind):
                items += make_extra(kind, getattr(args, kind), args.extra_limit, training=args.training, seed=args.seed)
        write_benchmark(items, args.out, meta={"source": "proxy", "seed": args.seed, "training": str(args.training)})
    else:
        for split, items in load_benchmark(args.source, args.splits, args.limit).items():
            it = items[0]
            print(f"{split}: {len(items)} items, {sum(i.seconds for i in items):.0f} s of audio; e.g. {it.id}: "
                  f"{it.transcript!r} -> {it.answer!r}")


if __name__ == "__main__":
    main()

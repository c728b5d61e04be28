"""A checkpoint with its talker replaced by a fresh one of other sizes, to train with ``bench_stage --init``.

The talker's sizes live in ``model.tiny`` and so in ``init_model``: trying a wider talker through the pipeline
reruns every stage. This swaps it into a finished thinker instead (the thinker, audio encoder and codec ids
kept; the talker built as ``init_model`` would, random): ::

    .venv/bin/python -m bench.swap_talker checkpoints/acoustic_tis/tis /tmp/wide --hidden 128 --heads 4
    .venv/bin/python -m bench.bench_stage --stage talker --init /tmp/wide --set talker.steps=2880 \\
        --set model.tiny.talker_hidden_size=128 --set model.tiny.talker_heads=4 --heard 64

(README, "What closes part of the rest": 128 wide, 4 heads heard at 0.777x the codec against 0.733x.)
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path


def swap_talker(src: str | Path, dst: str | Path, hidden: int, heads: int, layers: int, params=None) -> Path:
    """Write ``src``'s newest checkpoint with a fresh talker of ``hidden`` / ``heads`` / ``layers`` to
    ``dst`` (a new step directory of the same name); returns it. The talker config keeps the source's
    token ids and ``tis_*`` settings."""
    from models.omni import build_tiny, load_checkpoint, save
    from tasks.core.checkpoint import latest
    from tasks.core.params import load_params

    step = latest(src)
    model, tok = load_checkpoint(step)
    p = params or load_params()
    fresh = build_tiny(replace(p.model.tiny, talker_hidden_size=hidden, talker_heads=heads, talker_layers=layers), tok)
    cfg = fresh.config.talker_config
    for k, v in vars(model.config.talker_config).items():
        if k.startswith("tis_") or k.endswith(("_token_id", "_token")):
            setattr(cfg, k, v)
    model.talker, model.config.talker_config = fresh.talker, cfg
    out = Path(dst) / step.name
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    save(model, tmp / "model")
    shutil.copytree(step / "tokenizer", tmp / "tokenizer")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="a stage dir or step dir (its newest step), e.g. checkpoints/acoustic_tis/tis")
    ap.add_argument("dst", help="where the new step dir goes (pass it to bench_stage --init)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args(argv)
    if args.hidden % args.heads:
        raise SystemExit(f"--hidden {args.hidden} must be a multiple of --heads {args.heads}")
    out = swap_talker(args.src, args.dst, args.hidden, args.heads, args.layers)
    print(out)
    return out


if __name__ == "__main__":
    main()

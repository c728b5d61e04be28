"""The entry every training stage module shares: params -> MLflow child run -> trainer -> metrics.

Writes ``metrics/<stage>.json`` (DVC metrics) and ``metrics/<stage>_loss.png`` (logged to MLflow).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from tasks.core.params import ROOT, Params, load_params, to_dict

log = logging.getLogger("stage")


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def run_name(stage: str, fmt: str | None) -> str:
    """DVC's name for a matrix stage (``text_tis@tis``); also the MLflow run and metrics file name."""
    return f"{stage}@{fmt}" if fmt else stage


def run_stage(stage: str, data_dir: Path, init_dir: Path, fmt: str | None = None, p: Params | None = None,
              out_dir: Path | None = None, metrics_dir: Path | None = None, codec_dir: Path | None = None):
    """Train ``stage`` (in sequence format ``fmt`` for format-dependent stages)."""
    from tasks.core.plots import loss_curve
    from tasks.core.tracking import is_rank0, stage_run
    from tasks.core.trainer import train

    p = p or load_params()
    sp = getattr(p, stage)
    name = run_name(stage, fmt)
    out_dir = out_dir or ROOT / "checkpoints" / stage / (fmt or "")
    metrics_dir = metrics_dir or ROOT / "metrics"
    with stage_run(name, p.mlflow.experiment, {stage: to_dict(sp), "trainer": to_dict(p.trainer), "format": fmt,
                                                "schedule": to_dict(p.schedule), "seed": p.seed}) as tr:
        res = train(stage, p, sp, Path(data_dir), Path(init_dir), out_dir, fmt=fmt or "tis", tracker=tr,
                    codec_dir=codec_dir)
        if not is_rank0():
            return res
        metrics = {"train/loss": res.final_loss, "train/tokens_per_s": round(res.tokens_per_s, 1),
                   "steps": res.steps, "resumed_from_step": res.start_step}
        if res.val_loss is not None:
            metrics["val/loss"] = res.val_loss
        if res.history:
            metrics["train/first_loss"] = res.history[0][1]
        write_json_atomic(metrics_dir / f"{name}.json", metrics)
        png = loss_curve(res.history, metrics_dir / f"{name}_loss.png", name, res.val_loss)
        tr.metrics({k: v for k, v in metrics.items() if k.startswith(("val/",))}, step=res.steps)
        tr.artifact(png, "plots")
        tr.artifact(metrics_dir / f"{name}.json")
        tr.tags({"checkpoint": str(res.checkpoint), "resumed": str(res.resumed)})
        log.info("%s: %d steps (from %d), loss %.4f -> %.4f, val %s, %.0f tok/s; checkpoint %s", name,
                 res.steps, res.start_step, res.history[0][1] if res.history else float("nan"), res.final_loss,
                 f"{res.val_loss:.4f}" if res.val_loss is not None else "-", res.tokens_per_s, res.checkpoint)
    return res


def main(stage: str, data_dir: str, init_dir: str, per_format: bool | None = None,
         argv: list[str] | None = None) -> None:
    """CLI of a training stage module: ``python -m tasks.<stage> [--format tis|think_first]``.

    ``init_dir`` may contain ``{format}`` (the upstream checkpoint of the same format).
    ``per_format`` defaults to the stage table's (format-dependent targets: interleaved, speech).
    """
    import argparse

    from tasks.core.params import FORMATS
    from tasks.core.stages import spec

    if per_format is None:
        per_format = spec(stage).per_format

    ap = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=f"Train the {stage} stage.")
    if per_format:
        ap.add_argument("--format", choices=FORMATS, default="tis", help="sequence format (default: tis)")
    # The `deepspeed` launcher passes --local_rank to every rank (it also sets LOCAL_RANK, which we use).
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    fmt = getattr(args, "format", None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_stage(stage, ROOT / data_dir, ROOT / init_dir.format(format=fmt), fmt)

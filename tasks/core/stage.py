"""The one entry shape every stage shares: params -> tracked run -> work -> metrics and artifacts.

A stage module defines ``STAGE`` (its name in dvc.yaml, params.yaml, MLflow and the flow), ``PARAMS``
(the params.yaml keys it reads, exactly the ``params`` of its dvc.yaml stage), a typed
``run(p, ...) -> StageResult`` that does the work, and ``main()``::

    def main(argv=None):
        stage_main(STAGE, PARAMS, lambda p, fmt, tracker: run(p, fmt, tracker), argv, per_format=True)

``stage_main`` parses the CLI (``--format`` for format-dependent stages; the ``--local_rank`` the
deepspeed launcher passes), loads params.yaml, opens the MLflow child run (rank 0 only) with those
params and its input datasets/checkpoints (with DVC's hashes as digests) logged, calls the work,
writes ``metrics/<name>.json`` (DVC metrics) atomically, and logs metrics, artifacts and tables to
the run.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from models.atomic import write_json
from tasks.core.params import FORMATS, ROOT, Params, load_params, to_dict

log = logging.getLogger("stage")
METRICS_DIR = ROOT / "metrics"


def run_name(stage: str, fmt: str | None) -> str:
    """DVC's name for a matrix stage (``text_tis@tis``); also the MLflow run, the flow's task and the
    metrics file name (``tasks.core.stages.pipeline_runs`` lists them all)."""
    return f"{stage}@{fmt}" if fmt else stage


@dataclass
class StageResult:
    """What a stage's ``run`` returns: numbers for DVC and MLflow, files and tables for MLflow."""

    metrics: dict[str, Any]  # flat "split/metric" keys; numbers go to MLflow, everything to metrics/<name>.json
    summary: str = ""  # one line for the log
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)  # (path, artifact dir)
    tables: dict[str, list[dict]] = field(default_factory=dict)  # artifact file (.json) -> rows
    tags: dict[str, str] = field(default_factory=dict)
    logged: dict[str, float] | None = None  # numbers for MLflow when they differ from ``metrics`` (nested stats)


def params_of(p: Params, keys: list[str]) -> dict[str, Any]:
    """The params a stage reads, by dvc.yaml key (``schedule`` or a dotted ``schedule.speak``)."""
    out = {}
    for k in keys:
        v = p
        for part in k.split("."):
            v = getattr(v, part)
        out[k] = to_dict(v) if hasattr(v, "__dataclass_fields__") else v
    return out


def record(result: StageResult, name: str, tracker, metrics_dir: Path | None = None) -> Path:
    """Write ``metrics/<name>.json`` and log everything in ``result`` to the tracker's run."""
    path = write_json(Path(metrics_dir or METRICS_DIR) / f"{name}.json", result.metrics)
    numbers = result.logged if result.logged is not None else result.metrics
    tracker.metrics({k: v for k, v in numbers.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for f, where in result.artifacts + [(path, None)]:
        tracker.artifact(f, where)
    for file, rows in result.tables.items():
        tracker.table(rows, file)
    if result.tags:
        tracker.tags(result.tags)
    return path


def stage_main(stage: str, params: list[str], work: Callable[[Params, str | None, Any], StageResult],
               argv: list[str] | None = None, per_format: bool = False, description: str | None = None,
               context: str = "training") -> StageResult:
    """CLI of a stage module: ``python -m tasks.<stage> [--format tis|think_first]``."""
    from tasks.core.tracking import dvc_inputs, is_rank0, stage_run

    ap = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=description or f"Run the {stage} stage.")
    if per_format:
        ap.add_argument("--format", choices=FORMATS, default="tis", help="sequence format (default: tis)")
    # The `deepspeed` launcher passes --local_rank to every rank (it also sets LOCAL_RANK, which we use).
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    fmt = getattr(args, "format", None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = load_params()
    name = run_name(stage, fmt)
    from tasks.core.cpu import CpuShare

    if (cores := CpuShare().apply()) is not None:  # stages running beside this one share the cores
        log.info("%s: %d core(s) lent by the flow", name, cores)
    # The run lists what it read (dvc.yaml deps under data/, checkpoints/, reports/) with DVC's hashes.
    with stage_run(name, p.mlflow.experiment, {**params_of(p, params), "format": fmt},
                   inputs=dvc_inputs(stage, fmt), context=context) as tr:
        result = work(p, fmt, tr)
        if is_rank0():
            record(result, name, tr)
    if result.summary and is_rank0():
        log.info("%s: %s", name, result.summary)
    return result

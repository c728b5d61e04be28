"""What every training stage module runs: the trainer, then its metrics, loss plot and tags.

    python -m tasks.text_tis --format tis     # any of: align pretrain text_tis acoustic_tis talker
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.params import ROOT, Params
from tasks.core import stage as stage_mod
from tasks.core.stage import StageResult, run_name, stage_main
from tasks.core.stages import spec

DATA = "data/synthesize"


def paths(stage: str, fmt: str | None) -> tuple[Path, Path, Path]:
    """(data dir, upstream checkpoint dir, output dir) of a training stage in the repository."""
    up = spec(stage).upstream
    init = ROOT / "checkpoints" / up
    if up != "init_model" and spec(up).per_format:
        init = init / (fmt or "tis")
    return ROOT / DATA, init, ROOT / "checkpoints" / stage / (fmt or "")


def run(stage: str, p: Params, fmt: str | None = None, tracker=None, data_dir: Path | None = None,
        init_dir: Path | None = None, out_dir: Path | None = None, codec_dir: Path | None = None,
        metrics_dir: Path | None = None) -> StageResult:
    """Train ``stage`` (in sequence format ``fmt`` for format-dependent stages)."""
    from models.atomic import write_json
    from tasks.core.plots import loss_curve, probe_curve
    from tasks.core.trainer import train

    d, i, o = paths(stage, fmt)
    name = run_name(stage, fmt)
    res = train(stage, p, p.stage(stage), Path(data_dir or d), Path(init_dir or i), Path(out_dir or o),
                fmt=fmt or "tis", tracker=tracker, codec_dir=codec_dir)
    metrics = {"train/loss": res.final_loss, "train/tokens_per_s": round(res.tokens_per_s, 1), "steps": res.steps,
               "resumed_from_step": res.start_step}
    if res.val_loss is not None:
        metrics["val/loss"] = res.val_loss
    if res.val_loss is not None and res.val_loss_other_speech is not None:
        # How much the thinker's states tell the talker: > 0 once it speaks this answer, not any answer.
        metrics["val/loss_other_speech"] = res.val_loss_other_speech
        metrics["val/thinker_gain"] = round(res.val_loss_other_speech - res.val_loss, 5)
    if res.history:
        metrics["train/first_loss"] = res.history[0][1]
    mdir = Path(metrics_dir or stage_mod.METRICS_DIR)
    png = loss_curve(res.history, mdir / f"{name}_loss.png", name, res.val_loss)
    artifacts = [(png, "plots")]
    if getattr(p.stage(stage), "probe_every", 0):
        # The accuracy curve: a DVC plot (one row per probe) and a PNG beside the loss.
        rows = [{"step": s, **{k.split("/", 1)[1]: round(v, 4) for k, v in m.items()}} for s, m in res.probes]
        write_json(mdir / f"{name}_probe.json", rows)
        artifacts.append((probe_curve(res.probes, mdir / f"{name}_probe.png", f"{name}: held-out probe"), "plots"))
        if res.probes:
            metrics.update({k: round(v, 4) for k, v in res.probes[-1][1].items()})
    first = f"{res.history[0][1]:.4f}" if res.history else "nan"
    val = f"{res.val_loss:.4f}" if res.val_loss is not None else "-"
    return StageResult(metrics, f"{res.steps} steps (from {res.start_step}), loss {first} -> {res.final_loss:.4f}, "
                       f"val {val}, {res.tokens_per_s:.0f} tok/s; checkpoint {res.checkpoint}",
                       artifacts=artifacts, tags={"checkpoint": str(res.checkpoint), "resumed": str(res.resumed)})


def training_main(stage: str, params: list[str], argv: list[str] | None = None) -> StageResult:
    """CLI of a training stage module (``--format`` where the stage table says the target depends on it)."""
    return stage_main(stage, params, lambda p, fmt, tr: run(stage, p, fmt, tr), argv, per_format=spec(stage).per_format,
                      description=f"Train the {stage} stage ({spec(stage).input} input, {spec(stage).target} target).")

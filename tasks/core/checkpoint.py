"""Checkpoint layout shared by every stage.

A stage's output directory holds complete checkpoints only, one per saved step::

    checkpoints/<stage>/step-00000050/
        model/               save_pretrained (safetensors) + spk_dict.pt
        tokenizer/
        ds/                  DeepSpeed engine state: optimizer, scheduler (every ZeRO stage)
        rng-rank0.pt ...     RNG states per rank
        trainer_state.json   step, fingerprint, losses so far

Each is written as ``.step-XXXXXXXX.tmp`` and renamed into place when complete, so a kill never
leaves half a checkpoint under a ``step-*`` name; leftovers are removed at the next start.
``init_model`` writes ``model/`` and ``tokenizer/`` directly in its directory (step 0).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dirs(stage_dir: Path) -> list[tuple[int, Path]]:
    if not stage_dir.exists():
        return []
    out = []
    for d in stage_dir.iterdir():
        m = STEP_DIR.match(d.name)
        if m and d.is_dir():
            out.append((int(m.group(1)), d))
    return sorted(out)


def latest(stage_dir: str | Path) -> Path:
    """The newest complete checkpoint of a stage (its ``model/`` and ``tokenizer/`` live inside)."""
    stage_dir = Path(stage_dir)
    dirs = step_dirs(stage_dir)
    if dirs:
        return dirs[-1][1]
    if (stage_dir / "model").is_dir():
        return stage_dir
    raise FileNotFoundError(
        f"no checkpoint in {stage_dir}; run the stage that writes it first (`dvc repro {stage_dir.name}`)"
    )


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def remove_partial(stage_dir: Path) -> list[Path]:
    """Delete temp dirs a killed run left behind; returns what was removed."""
    gone = []
    if stage_dir.exists():
        for d in stage_dir.iterdir():
            if d.name.startswith(".") and ".tmp" in d.name:
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d)
    return gone


def prune(stage_dir: Path, keep: int) -> None:
    for _, d in step_dirs(stage_dir)[:-keep]:
        shutil.rmtree(d, ignore_errors=True)


def read_state(ckpt: Path) -> dict:
    f = ckpt / "trainer_state.json"
    if f.exists():
        return json.loads(f.read_text())
    meta = ckpt / "meta.json"
    return json.loads(meta.read_text()) if meta.exists() else {}

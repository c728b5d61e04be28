"""Checkpoints shared by every stage: layout, save, load, resume matching, pruning.

A stage's output directory holds complete checkpoints only, one per saved step::

    checkpoints/<stage>/step-00000050/
        model/               save_pretrained (safetensors) + spk_dict.pt
        tokenizer/
        ds/                  DeepSpeed engine state: optimizer, LR scheduler (every ZeRO stage)
        rng-rank0.pt ...     RNG states per rank
        trainer_state.json   step, fingerprint, data cursor, losses so far, config

Each is written as ``.step-XXXXXXXX.<random>.tmp`` and renamed into place when complete; pruning
renames an old one aside (``.step-….del.tmp``) before deleting it. So a kill at any moment never
leaves an incomplete directory under a ``step-*`` name; temp leftovers are removed at the next start.
``init_model`` writes ``model/`` and ``tokenizer/`` directly in its directory (step 0).

Failpoints (tests): ``OMNI_TIS_FAILPOINT=<name>[@k]`` SIGKILLs the process the k-th time (default
1st) it passes that point of a save or prune (``save:after_engine``, ``save:before_rename``,
``prune:after_rename``), so kill tests are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from models.atomic import remove_partial, replace_dir, write_json

STEP_DIR = re.compile(r"^step-(\d{8})$")
FAILPOINT_ENV = "OMNI_TIS_FAILPOINT"


_PASSED: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Die here, as a kill would, when the environment asks for it (tests only)."""
    want = os.environ.get(FAILPOINT_ENV, "")
    if not want:
        return
    point, _, k = want.partition("@")
    if point == name:
        _PASSED[name] = _PASSED.get(name, 0) + 1
        if _PASSED[name] == int(k or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def step_dirs(stage_dir: Path) -> list[tuple[int, Path]]:
    stage_dir = Path(stage_dir)
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


def prune(stage_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, each renamed aside first."""
    for _, d in step_dirs(stage_dir)[:-keep]:
        aside = d.with_name(f".{d.name}.del.tmp")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(d, aside)
        failpoint("prune:after_rename")
        shutil.rmtree(aside, ignore_errors=True)


def read_state(ckpt: Path) -> dict:
    f = Path(ckpt) / "trainer_state.json"
    if f.exists():
        return json.loads(f.read_text())
    meta = Path(ckpt) / "meta.json"
    return json.loads(meta.read_text()) if meta.exists() else {}


def rng_state() -> dict:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def fingerprint(p, spec, sp, data_dir: Path, init_ckpt: Path, fmt: str, codec_dir: Path | None = None) -> str:
    """What must match for a checkpoint to be resumed (not steps: more steps continue a run; not the
    logging and checkpoint cadence)."""
    h = hashlib.sha256()
    files = [data_dir / "train.parquet", data_dir / "validation.parquet"]
    if spec.t.codec and codec_dir is not None:
        files += [codec_dir / "codec.json", codec_dir / "codes.parquet"]
    for f in files:
        if f.exists():
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(b"-")
    trainer = {k: v for k, v in asdict(p.trainer).items()
               if k not in ("log_every", "checkpoint_every", "keep_checkpoints", "feature_cache_mb", "state_cache_mb")}
    stage = {k: v for k, v in asdict(sp).items() if k != "steps"}
    upstream = read_state(init_ckpt)
    h.update(json.dumps({"spec": spec.name, "trains": [sorted(ph.trainable) for ph in spec.phases], "format": fmt,
                         "stage": stage, "trainer": trainer,
                         "schedule": asdict(p.schedule), "seed": p.seed,
                         "transcribe_first": bool(p.model.transcribe_first) and spec.input != "text",
                         **({"transcript": p.model.transcript}
                            if p.model.transcribe_first and spec.input != "text" and p.model.transcript != "digits" else {}),
                         "upstream": [str(init_ckpt.name), upstream.get("fingerprint"), upstream.get("step"),
                                      upstream.get("source")]}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def save(out_dir: Path, step: int, engine, model, tokenizer, state: dict[str, Any], rank: int, zero_stage: int,
         keep: int) -> Path:
    """Write checkpoint ``step`` of ``out_dir`` on every rank (collective); returns its path."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from models.omni import save as save_model

    out_dir = Path(out_dir)
    name = step_name(step)
    tmp_holder = [None]
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp_holder[0] = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
    dist.broadcast_object_list(tmp_holder, src=0)
    tmp = Path(tmp_holder[0])
    engine.save_checkpoint(str(tmp / "ds"), tag="state")
    failpoint("save:after_engine")
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if rank == 0:
                save_model(model, tmp / "model")
    elif rank == 0:
        save_model(model, tmp / "model")
    if rank == 0:
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        write_json(tmp / "trainer_state.json", {**state, "step": step})
    dist.barrier()
    if rank == 0:
        failpoint("save:before_rename")
        replace_dir(tmp, out_dir / name)
        prune(out_dir, keep)
    dist.barrier()
    return out_dir / name


def load(ckpt: Path, engine, rank: int) -> dict:
    """Restore engine (weights, optimizer, scheduler) and this rank's RNG from ``ckpt``; returns its state."""
    import torch

    engine.load_checkpoint(str(ckpt / "ds"), tag="state", load_module_strict=False)
    rng = ckpt / f"rng-rank{rank}.pt"
    if rng.exists():
        set_rng(torch.load(rng, weights_only=False))
    return read_state(ckpt)


__all__ = ["failpoint", "fingerprint", "latest", "load", "prune", "read_state", "remove_partial", "save",
           "step_dirs", "step_name"]

"""Distributed setup and the DeepSpeed config, built from params.yaml (no parallel JSON file).

One process on CPU (gloo) when no launcher set the rank variables; under ``deepspeed --num_gpus N``
(or torchrun) every rank joins the launcher's group (nccl on GPUs).
"""

from __future__ import annotations

import os
import socket
from typing import Any


SELF_MADE = "OMNI_TIS_SINGLE_RANK"  # the port, when this module made up RANK & co. itself


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int]:
    """Join the launcher's process group, or make a one-process group; returns (rank, world)."""
    import deepspeed
    import torch

    inherited = (os.environ.get(SELF_MADE) == os.environ.get("MASTER_PORT", "-") and os.environ.get("WORLD_SIZE") == "1"
                 and not torch.distributed.is_initialized())
    if "RANK" not in os.environ or inherited:
        # Not under a launcher: a single local rank on a free port. (Variables we set in a parent process
        # that trained in-process are not a launcher's: their port is still bound there.)
        port = str(free_port())
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                          **{SELF_MADE: port})
    if not torch.distributed.is_initialized():
        if not torch.cuda.is_available() and os.environ.get("WORLD_SIZE") == "1":
            # One CPU rank has no collective to speed up: skip DeepSpeed's shared-memory comm op, which it
            # otherwise compiles (~30 s on a fresh machine) and loads (~2.5 s) in every stage process.
            import importlib

            # (the package attribute deepspeed.comm.torch is the torch module itself: go by module name)
            importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def use_bf16(precision: str) -> bool:
    import torch

    return precision == "bf16" or (precision == "auto" and torch.cuda.is_available())


def ds_config(trainer, micro_batch: int, world: int) -> dict[str, Any]:
    """The DeepSpeed config for ``trainer`` (params.yaml ``trainer``) and this many ranks."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": trainer.grad_accum,
        "train_batch_size": micro_batch * trainer.grad_accum * world,
        "gradient_clipping": trainer.grad_clip,
        "zero_optimization": {"stage": trainer.zero_stage},
        "bf16": {"enabled": use_bf16(trainer.precision)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # ZeRO with a client (torch) optimizer: DeepSpeed's fused CPU Adam would compile for minutes.
        "zero_allow_untested_optimizer": True,
    }

"""params.yaml -> frozen, validated dataclasses. An unknown or mistyped key is an error.

    python -m tasks.core.params [params.yaml]    # validate and print the resolved config
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from models.format import Schedule
from models.omni import TinyDims
from tasks.synth.config import SynthesizeParams

ROOT = Path(__file__).resolve().parents[2]


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the key and what to change."""


@dataclass(frozen=True)
class ModelParams:
    source: str = "tiny"  # "tiny" (random init built from `tiny`) or a local checkpoint dir / hub id
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    tokenizer_vocab_size: int = 2000
    tokenizer_corpus: int = 4000  # generated problems the tiny tokenizer is trained on
    tiny: TinyDims = field(default_factory=TinyDims)

    def __post_init__(self) -> None:
        if not self.source:
            raise ParamsError("model.source is empty; use 'tiny' or a checkpoint path / hub id")
        if self.tokenizer_corpus < 10:
            raise ParamsError("model.tokenizer_corpus must be at least 10 problems")


@dataclass(frozen=True)
class TrainerParams:
    """Settings every training stage shares (DeepSpeed engine, logging, checkpoints)."""

    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    grad_accum: int = 1
    grad_clip: float = 1.0
    log_every: int = 5
    checkpoint_every: int = 50
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for k in ("grad_accum", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, k) < 1:
                raise ParamsError(f"trainer.{k} must be >= 1, got {getattr(self, k)}")


FORMATS = ("tis", "think_first")


@dataclass(frozen=True)
class StageParams:
    """One training stage's own knobs (params.yaml key = stage name)."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_len: int = 320
    text_fraction: float = 0.5  # pretrain only: share of problems given as text instead of audio

    def __post_init__(self) -> None:
        if not 0.0 <= self.text_fraction <= 1.0:
            raise ParamsError(f"text_fraction must be within [0, 1], got {self.text_fraction}")
        if self.steps < 1 or self.batch_size < 1:
            raise ParamsError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.lr <= 0:
            raise ParamsError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise ParamsError("warmup_steps must be >= 0")


@dataclass(frozen=True)
class CodecParams:
    """The speech codec whose tokens the talker predicts (models/codec.py)."""

    kind: Literal["world", "mimi"] = "world"  # world: fitted here, offline; mimi: pretrained, local path
    path: str = ""  # mimi only: local checkpoint directory
    codebook_size: int = 256
    n_codebooks: int = 3
    fit_clips: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind == "mimi" and not self.path:
            raise ParamsError("codec.kind=mimi needs codec.path (a local Mimi checkpoint directory)")


@dataclass(frozen=True)
class MlflowParams:
    experiment: str = "omni-tis"


@dataclass(frozen=True)
class DvcParams:
    remote: str = "storage"
    # A local directory by default; any DVC URL works (s3://, gs://, ssh://) with its plugin installed.
    remote_url: str = "~/.cache/omni-tis/dvc-storage"


@dataclass(frozen=True)
class Params:
    seed: int = 0
    schedule: Schedule = field(default_factory=Schedule)
    model: ModelParams = field(default_factory=ModelParams)
    synthesize: SynthesizeParams = field(default_factory=SynthesizeParams)
    # Sequence formats trained side by side (DVC matrix): the TiS model and the think-first baseline.
    formats: tuple[Literal["tis", "think_first"], ...] = FORMATS
    trainer: TrainerParams = field(default_factory=TrainerParams)
    codec: CodecParams = field(default_factory=CodecParams)
    align: StageParams = field(default_factory=StageParams)
    pretrain: StageParams = field(default_factory=StageParams)
    text_tis: StageParams = field(default_factory=StageParams)
    acoustic_tis: StageParams = field(default_factory=StageParams)
    talker: StageParams = field(default_factory=StageParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)
    dvc: DvcParams = field(default_factory=DvcParams)

    def __post_init__(self) -> None:
        if not self.formats or len(set(self.formats)) != len(self.formats):
            raise ParamsError(f"formats must list 'tis' and/or 'think_first' once each, got {list(self.formats)}")


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{key} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ParamsError(f"{key}={value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key)
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ParamsError(f"{key} must be a list")
        items = [_convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ParamsError(f"{key} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with the full dotted name."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ParamsError(
            f"unknown key(s) {[where + k for k in unknown]} in params.yaml; known keys here: {sorted(names)}"
        )
    kwargs = {k: _convert(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ParamsError:
        raise
    except (ValueError, TypeError) as e:
        raise ParamsError(f"{prefix or 'params'}: {e}") from e


def load_params(path: str | Path | None = None) -> Params:
    p = Path(path) if path else ROOT / "params.yaml"
    if not p.exists():
        raise ParamsError(f"{p} not found; run from the repository root or pass the path")
    with open(p) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{p} must hold a mapping at top level")
    return from_dict(Params, data)


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


def flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flat(v, key))
        else:
            out[key] = v
    return out


if __name__ == "__main__":
    print(yaml.safe_dump(to_dict(load_params(sys.argv[1] if len(sys.argv) > 1 else None)), sort_keys=False))

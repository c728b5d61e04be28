"""params.yaml -> frozen, validated config objects (pydantic dataclasses). params.yaml is the single
source of truth: every key the schema has must be there (no silent code default), an unknown or
mistyped key is an error that names the key.

    python -m tasks.core.params [params.yaml]    # validate and print the resolved config

In code and tests: ``load_params()`` (the repository's file) or ``load_params(overrides={...})`` (the
same with a nested mapping merged over it) — never hand-built defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml
from pydantic import ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from models.dims import TinyDims

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("tis", "think_first")
Format = Literal["tis", "think_first"]
_STRICT = ConfigDict(extra="forbid")  # + Strict* field types: "3" is not an int, 1 is not a bool

# Type aliases so every field is strict (ints are accepted where a float is asked).
Int, Float, Str, Bool = StrictInt, StrictFloat, StrictStr, StrictBool


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the key and what to change."""


SynthConfigError = ParamsError  # the synthesize section's errors are params errors like any other


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ParamsError(msg)


# ------------------------------------------------------------------------------------- synthesize
SourceKind = Literal["builtin", "gsm8k", "orca_math", "metamathqa", "svamp"]


@dataclass(frozen=True, config=_STRICT)
class SourceSpec:
    """One problem source.

    ``path``: a local .jsonl/.json/.parquet file (or a directory of them), or a Hugging Face hub id
    (needs a network); empty means the source's default hub id. ``builtin`` ignores ``path``.
    ``limit``: at most this many records (0 = all; for ``builtin``, 0 = ``num_problems``).
    """

    kind: SourceKind = "builtin"
    path: Str = ""
    split: Str = "train"
    limit: Int = 0

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ParamsError(f"synthesize.sources[{self.kind}].limit must be >= 0, got {self.limit}")


@dataclass(frozen=True, config=_STRICT)
class TTSParams:
    backend: Literal["espeak", "piper"]
    # Each sample gets one voice, speaking rate and pitch, drawn reproducibly from these.
    voices: tuple[Str, ...]
    rate_min: Int  # words per minute (espeak)
    rate_max: Int
    pitch_min: Int
    pitch_max: Int
    piper_model: Str  # backend=piper: path to the voice .onnx
    speak_response: Bool  # also synthesize the response (target speech for the talker)
    audio_format: Literal["flac", "wav"]

    def __post_init__(self) -> None:
        if not self.voices:
            raise ParamsError("synthesize.tts.voices is empty; list at least one voice, e.g. [en-us]")
        if not (80 <= self.rate_min <= self.rate_max <= 450):
            raise ParamsError("synthesize.tts needs 80 <= rate_min <= rate_max <= 450 (words per minute)")
        if not (0 <= self.pitch_min <= self.pitch_max <= 100):
            raise ParamsError("synthesize.tts needs 0 <= pitch_min <= pitch_max <= 100")
        if self.backend == "piper" and not self.piper_model:
            raise ParamsError("synthesize.tts.backend=piper needs synthesize.tts.piper_model (a voice .onnx path)")


@dataclass(frozen=True, config=_STRICT)
class LLMParams:
    """Optional rewriter/judge behind any OpenAI-compatible endpoint (off when ``endpoint`` is empty)."""

    endpoint: Str  # e.g. http://localhost:8000/v1
    model: Str
    api_key_env: Str  # name of the env var holding the key (may be unset for local servers)
    rewrite: Bool  # rewrite the spoken response (kept only if it passes every check)
    judge: Bool  # reject samples whose spoken question the judge says changed meaning
    timeout_s: Float
    temperature: Float

    def __post_init__(self) -> None:
        if (self.rewrite or self.judge) and not (self.endpoint and self.model):
            raise ParamsError(
                "synthesize.llm.rewrite/judge need synthesize.llm.endpoint and synthesize.llm.model; "
                "set both, or turn rewrite and judge off"
            )


@dataclass(frozen=True, config=_STRICT)
class RayParams:
    """Ray Data settings. ``RAY_ADDRESS`` in the environment (or ``address``) joins a cluster."""

    address: Str  # empty: RAY_ADDRESS if set, else a local Ray
    num_cpus: Int  # local Ray only: 0 = all cores
    shards: Int  # blocks the problems are split into
    batch_size: Int  # problems per map_batches call
    concurrency: Int  # parallel map tasks; 0 = Ray's choice

    def __post_init__(self) -> None:
        if self.shards < 1 or self.batch_size < 1 or self.num_cpus < 0 or self.concurrency < 0:
            raise ParamsError("synthesize.ray needs shards >= 1, batch_size >= 1, num_cpus >= 0, concurrency >= 0")


@dataclass(frozen=True, config=_STRICT)
class SynthesizeParams:
    sources: tuple[SourceSpec, ...]
    num_problems: Int  # problems the builtin source makes when its limit is 0
    validation_fraction: Float
    seed: Int
    max_len: Int  # TiS sequence length (tokens, prompt included) above which a sample is dropped
    max_response_words: Int
    max_question_words: Int
    asr_fraction: Float  # share of samples whose spoken question is checked by offline ASR
    asr_min_recall: Float  # share of the question's words the ASR must hear (espeak + generic LM ~0.3-0.5)
    tts: TTSParams
    llm: LLMParams
    ray: RayParams

    def __post_init__(self) -> None:
        if not self.sources:
            raise ParamsError("synthesize.sources is empty; add at least {kind: builtin}")
        if self.num_problems < 0:
            raise ParamsError(f"synthesize.num_problems must be >= 0, got {self.num_problems}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ParamsError("synthesize.validation_fraction must be strictly between 0 and 1")
        if not 0.0 <= self.asr_fraction <= 1.0 or not 0.0 <= self.asr_min_recall <= 1.0:
            raise ParamsError("synthesize.asr_fraction and asr_min_recall must be in [0, 1]")
        if self.max_len < 16 or self.max_response_words < 5 or self.max_question_words < 5:
            raise ParamsError("synthesize.max_len >= 16, max_response_words >= 5, max_question_words >= 5")


# ------------------------------------------------------------------------------------- the rest


@dataclass(frozen=True, config=_STRICT)
class ScheduleParams:
    """Speak ``speak`` response tokens, then think ``think`` reasoning tokens, repeated."""

    speak: Int
    think: Int

    def __post_init__(self) -> None:
        _check(self.speak >= 1 and self.think >= 1,
               f"schedule needs speak >= 1 and think >= 1, got speak={self.speak} think={self.think}")


@dataclass(frozen=True, config=_STRICT)
class ModelParams:
    source: Str  # "tiny" (random init built from `tiny`) or a local checkpoint dir / hub id
    dtype: Literal["auto", "bf16", "fp32"]
    tokenizer_vocab_size: Int
    tokenizer_corpus: Int  # generated problems the tiny tokenizer is trained on
    tiny: TinyDims

    def __post_init__(self) -> None:
        _check(bool(self.source), "model.source is empty; use 'tiny' or a checkpoint path / hub id")
        _check(self.tokenizer_corpus >= 10, "model.tokenizer_corpus must be at least 10 problems")


@dataclass(frozen=True, config=_STRICT)
class TrainerParams:
    """Settings every training stage shares (DeepSpeed engine, logging, checkpoints, data)."""

    zero_stage: Literal[0, 1, 2, 3]
    precision: Literal["auto", "bf16", "fp32"]  # auto: bf16 on GPU, fp32 on CPU
    grad_accum: Int
    grad_clip: Float
    log_every: Int
    checkpoint_every: Int
    keep_checkpoints: Int
    feature_cache_mb: Int  # log-mels of spoken questions kept in memory (LRU); 0 = compute every time

    def __post_init__(self) -> None:
        for k in ("grad_accum", "log_every", "checkpoint_every", "keep_checkpoints"):
            _check(getattr(self, k) >= 1, f"trainer.{k} must be >= 1, got {getattr(self, k)}")
        _check(self.feature_cache_mb >= 0, "trainer.feature_cache_mb must be >= 0")


@dataclass(frozen=True, config=_STRICT)
class StageParams:
    """One training stage's own knobs (params.yaml key = stage name)."""

    steps: Int
    batch_size: Int
    lr: Float
    warmup_steps: Int
    weight_decay: Float
    max_len: Int

    def __post_init__(self) -> None:
        _check(self.steps >= 1 and self.batch_size >= 1,
               f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        _check(self.lr > 0, f"lr must be positive, got {self.lr}")
        _check(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _check(self.max_len >= 16, f"max_len must be >= 16, got {self.max_len}")


@dataclass(frozen=True, config=_STRICT)
class PretrainParams(StageParams):
    text_fraction: Float  # share of problems given as text instead of audio (seeded, same every epoch)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.text_fraction <= 1.0, f"text_fraction must be within [0, 1], got {self.text_fraction}")


@dataclass(frozen=True, config=_STRICT)
class CodecParams:
    """The speech codec whose tokens the talker predicts (models/codec.py)."""

    kind: Literal["world", "mimi"]  # world: fitted here, offline; mimi: pretrained, local path
    path: Str  # mimi only: local checkpoint directory
    codebook_size: Int
    n_codebooks: Int
    fit_clips: Int
    seed: Int

    def __post_init__(self) -> None:
        _check(not (self.kind == "mimi" and not self.path),
               "codec.kind=mimi needs codec.path (a local Mimi checkpoint directory)")


@dataclass(frozen=True, config=_STRICT)
class MlflowParams:
    experiment: Str


@dataclass(frozen=True, config=_STRICT)
class DvcParams:
    remote: Str
    # A local directory by default; any DVC URL works (s3://, gs://, ssh://) with its plugin installed.
    remote_url: Str


@dataclass(frozen=True, config=_STRICT)
class Params:
    seed: Int
    schedule: ScheduleParams
    model: ModelParams
    synthesize: SynthesizeParams
    # Sequence formats trained side by side (DVC matrix): the TiS model and the think-first baseline.
    formats: tuple[Format, ...]
    trainer: TrainerParams
    codec: CodecParams
    align: StageParams
    pretrain: PretrainParams
    text_tis: StageParams
    acoustic_tis: StageParams
    talker: StageParams
    mlflow: MlflowParams
    dvc: DvcParams

    def __post_init__(self) -> None:
        _check(bool(self.formats) and len(set(self.formats)) == len(self.formats),
               f"formats must list 'tis' and/or 'think_first' once each, got {list(self.formats)}")

    def stage(self, name: str) -> StageParams:
        """A training stage's params by stage name."""
        sp = getattr(self, name, None)
        if not isinstance(sp, StageParams):
            raise ParamsError(f"params.yaml has no training stage {name!r}")
        return sp


# ------------------------------------------------------------------------------------------- loading
def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in get_args(tp):
            if dataclasses.is_dataclass(a):
                return a
    return None


def _require_all(cls: type, data: Any, prefix: str) -> None:
    """Every field of ``cls`` (recursively) must be present: a missing key never falls back to code."""
    if not isinstance(data, dict):
        return  # pydantic reports the wrong type
    hints = get_type_hints(cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.init]
    if missing:
        where = f"{prefix}." if prefix else ""
        raise ParamsError(f"params.yaml lacks {[where + m for m in missing]}; every setting must be written "
                          "there (see the repository's params.yaml for the key and a sensible value)")
    for name, value in data.items():
        sub = _dataclass_of(hints.get(name))
        if sub is not None:
            _require_all(sub, value, f"{prefix}.{name}" if prefix else name)
        # Items of a list (e.g. synthesize.sources) are records whose optional fields may be left out.


def _explain(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(str(x) for x in err["loc"]) or "params"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "unexpected_keyword_argument":
            msg = "unknown key (misspelled? see the repository's params.yaml for the known keys)"
        elif "input" in err and err["type"] not in ("missing", "value_error", "assertion_error"):
            msg += f" (got {err['input']!r})"
        lines.append(f"{key}: {msg}")
    return "invalid params.yaml:\n  " + "\n  ".join(lines)


def from_dict(cls: type, data: dict, prefix: str = ""):
    """Validate ``data`` into ``cls`` (a schema class above); raises ParamsError naming each bad key."""
    _require_all(cls, data, prefix)
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        raise ParamsError(_explain(e)) from None
    except ParamsError as e:
        raise ParamsError(f"invalid params.yaml: {e}") from None


def deep_update(base: dict, over: dict) -> dict:
    """``base`` with the nested mapping ``over`` merged in (a new dict; lists are replaced whole)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_update(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path | None = None) -> dict:
    p = Path(path) if path else ROOT / "params.yaml"
    if not p.exists():
        raise ParamsError(f"{p} not found; run from the repository root or pass the path")
    with open(p) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{p} must hold a mapping at top level")
    return data


def load_params(path: str | Path | None = None, overrides: dict | None = None) -> Params:
    """params.yaml (the repository's by default), with ``overrides`` merged over it, validated."""
    data = read_yaml(path)
    return from_dict(Params, deep_update(data, overrides) if overrides else data)


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

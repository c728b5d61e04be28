"""Settings of the `synthesize` stage (params.yaml key ``synthesize``), as frozen dataclasses.

Loaded by tasks/core/params.py like every stage's params: an unknown key is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SourceKind = Literal["builtin", "gsm8k", "orca_math", "metamathqa", "svamp"]


class SynthConfigError(ValueError):
    """A synthesize.* setting is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class SourceSpec:
    """One problem source.

    ``path``: a local .jsonl/.json/.parquet file (or a directory of them), or a Hugging Face hub id
    (needs a network); empty means the source's default hub id. ``builtin`` ignores ``path``.
    ``limit``: at most this many records (0 = all; for ``builtin``, 0 = ``num_problems``).
    """

    kind: SourceKind = "builtin"
    path: str = ""
    split: str = "train"
    limit: int = 0

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise SynthConfigError(f"synthesize.sources[{self.kind}].limit must be >= 0, got {self.limit}")


@dataclass(frozen=True)
class TTSParams:
    backend: Literal["espeak", "piper"] = "espeak"
    # Each sample gets one voice, speaking rate and pitch, drawn reproducibly from these.
    voices: tuple[str, ...] = ("en-us", "en-us+m3", "en-us+f3", "en-gb-x-rp", "en-us+f2", "en-us+m7")
    rate_min: int = 150  # words per minute (espeak)
    rate_max: int = 190
    pitch_min: int = 35
    pitch_max: int = 65
    piper_model: str = ""  # backend=piper: path to the voice .onnx
    speak_response: bool = True  # also synthesize the response (target speech for the talker)
    audio_format: Literal["flac", "wav"] = "flac"

    def __post_init__(self) -> None:
        if not self.voices:
            raise SynthConfigError("synthesize.tts.voices is empty; list at least one voice, e.g. [en-us]")
        if not (80 <= self.rate_min <= self.rate_max <= 450):
            raise SynthConfigError("synthesize.tts needs 80 <= rate_min <= rate_max <= 450 (words per minute)")
        if not (0 <= self.pitch_min <= self.pitch_max <= 100):
            raise SynthConfigError("synthesize.tts needs 0 <= pitch_min <= pitch_max <= 100")
        if self.backend == "piper" and not self.piper_model:
            raise SynthConfigError("synthesize.tts.backend=piper needs synthesize.tts.piper_model (a voice .onnx path)")


@dataclass(frozen=True)
class LLMParams:
    """Optional rewriter/judge behind any OpenAI-compatible endpoint (off when ``endpoint`` is empty)."""

    endpoint: str = ""  # e.g. http://localhost:8000/v1
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key (may be unset for local servers)
    rewrite: bool = False  # rewrite the spoken response (kept only if it passes every check)
    judge: bool = False  # reject samples whose spoken question the judge says changed meaning
    timeout_s: float = 60.0
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if (self.rewrite or self.judge) and not (self.endpoint and self.model):
            raise SynthConfigError(
                "synthesize.llm.rewrite/judge need synthesize.llm.endpoint and synthesize.llm.model; "
                "set both, or turn rewrite and judge off"
            )


@dataclass(frozen=True)
class RayParams:
    """Ray Data settings. ``RAY_ADDRESS`` in the environment (or ``address``) joins a cluster."""

    address: str = ""  # empty: RAY_ADDRESS if set, else a local Ray
    num_cpus: int = 0  # local Ray only: 0 = all cores
    shards: int = 8  # blocks the problems are split into
    batch_size: int = 32  # problems per map_batches call
    concurrency: int = 0  # parallel map tasks; 0 = Ray's choice

    def __post_init__(self) -> None:
        if self.shards < 1 or self.batch_size < 1 or self.num_cpus < 0 or self.concurrency < 0:
            raise SynthConfigError("synthesize.ray needs shards >= 1, batch_size >= 1, num_cpus >= 0, concurrency >= 0")


@dataclass(frozen=True)
class SynthesizeParams:
    sources: tuple[SourceSpec, ...] = (SourceSpec(),)
    num_problems: int = 2000  # problems the builtin source makes when its limit is 0
    validation_fraction: float = 0.05
    seed: int = 2
    max_len: int = 1024  # TiS sequence length (tokens, prompt included) above which a sample is dropped
    max_response_words: int = 60
    max_question_words: int = 250
    asr_fraction: float = 0.05  # share of samples whose spoken question is checked by offline ASR
    asr_min_recall: float = 0.15  # share of the question's words the ASR must hear (espeak + generic LM ~0.3-0.5)
    tts: TTSParams = field(default_factory=TTSParams)
    llm: LLMParams = field(default_factory=LLMParams)
    ray: RayParams = field(default_factory=RayParams)

    def __post_init__(self) -> None:
        if not self.sources:
            raise SynthConfigError("synthesize.sources is empty; add at least {kind: builtin}")
        if self.num_problems < 0:
            raise SynthConfigError(f"synthesize.num_problems must be >= 0, got {self.num_problems}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise SynthConfigError("synthesize.validation_fraction must be strictly between 0 and 1")
        if not 0.0 <= self.asr_fraction <= 1.0 or not 0.0 <= self.asr_min_recall <= 1.0:
            raise SynthConfigError("synthesize.asr_fraction and asr_min_recall must be in [0, 1]")
        if self.max_len < 16 or self.max_response_words < 5 or self.max_question_words < 5:
            raise SynthConfigError("synthesize.max_len >= 16, max_response_words >= 5, max_question_words >= 5")

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
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import yaml
from pydantic import BeforeValidator, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from models.dims import TinyDims

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("tis", "think_first")
Format = Literal["tis", "think_first"]
_STRICT = ConfigDict(extra="forbid")  # + Strict* field types: "3" is not an int, 1 is not a bool

# Type aliases so every field is strict (ints are accepted where a float is asked).
Int, Float, Str, Bool = StrictInt, StrictFloat, StrictStr, StrictBool
# auto | on | off; YAML 1.1 reads a bare on / off as true / false, taken here as the words they were
Switch = Annotated[Literal["auto", "on", "off"],
                   BeforeValidator(lambda v: ("on" if v else "off") if isinstance(v, bool) else v)]


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the key and what to change."""


SynthConfigError = ParamsError  # the synthesize section's errors are params errors like any other


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ParamsError(msg)


# ------------------------------------------------------------------------------------- synthesize
SourceKind = Literal["builtin", "gsm8k", "orca_math", "aqua", "metamathqa", "svamp"]
# The built-in generator's kinds (tasks.synth.builtin.KINDS is this tuple; the service reads params, so
# params does not import the generator).
BUILTIN_KINDS = ("short_digit", "long_digit", "single_step", "multi_step")


def _check_kinds(kinds: tuple[str, ...], where: str, hint: str = "") -> None:
    """Every one of ``kinds`` is a built-in kind; else a ParamsError naming ``where`` and the choices."""
    unknown = [k for k in kinds if k not in BUILTIN_KINDS]
    if unknown:
        raise ParamsError(f"{where}: unknown kind(s) {unknown}; choose from {list(BUILTIN_KINDS)}{hint}")


@dataclass(frozen=True, config=_STRICT)
class SourceSpec:
    """One problem source.

    ``path``: a local .jsonl/.json/.parquet file (or a directory of them), or a Hugging Face hub id
    (needs a network); empty means the source's default hub id. ``builtin`` ignores ``path``.
    ``limit``: at most this many records (0 = all; for ``builtin``, 0 = ``num_problems``).
    ``kinds``: ``builtin`` only: the kinds of problem it makes, in turn (empty = all four,
    ``BUILTIN_KINDS``); a second builtin source of ``[short_digit]`` is a spoken drill of
    short questions beside the mixture.
    ``speak_response``: false = this source's questions are spoken but its responses are not (no
    TTS, no codec ids): a drill for the ear costs half the speech and none of the codec's work; the
    talker trains on the other sources' responses. Needs ``tts.speak_response`` for those.
    """

    kind: SourceKind = "builtin"
    path: Str = ""
    split: Str = "train"
    limit: Int = 0
    kinds: tuple[Str, ...] = ()
    speak_response: Bool = True

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ParamsError(f"synthesize.sources[{self.kind}].limit must be >= 0, got {self.limit}")
        if self.kinds and self.kind != "builtin":
            raise ParamsError(f"synthesize.sources[{self.kind}].kinds is for builtin sources only (it picks the kinds of "
                              f"problem the generator makes); remove it from the {self.kind} source")
        _check_kinds(self.kinds, "synthesize.sources[builtin].kinds")


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
    # The model's own voice: every response is said by this one voice (the talker learns one speaker);
    # "" = each response in its question's drawn voice.
    response_voice: Str = "en-us"
    response_rate: Int = 175
    response_pitch: Int = 50

    def __post_init__(self) -> None:
        if not self.voices:
            raise ParamsError("synthesize.tts.voices is empty; list at least one voice, e.g. [en-us]")
        if not (80 <= self.rate_min <= self.rate_max <= 450):
            raise ParamsError("synthesize.tts needs 80 <= rate_min <= rate_max <= 450 (words per minute)")
        if not (0 <= self.pitch_min <= self.pitch_max <= 100):
            raise ParamsError("synthesize.tts needs 0 <= pitch_min <= pitch_max <= 100")
        if not (80 <= self.response_rate <= 450) or not (0 <= self.response_pitch <= 100):
            raise ParamsError("synthesize.tts needs 80 <= response_rate <= 450 (words per minute) and "
                              "0 <= response_pitch <= 100")
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
    text_pool: Int  # extra built-in problems verified as text only (no TTS) for the text stages; 0 = none
    validation_fraction: Float
    seed: Int
    max_len: Int  # TiS sequence length (tokens, prompt included) above which a sample is dropped
    trace: Literal["scratchpad", "partials", "remaining"]  # built-in arithmetic traces (tasks/synth/scratchpad.py STYLES)
    max_response_words: Int
    max_question_words: Int
    asr_fraction: Float  # share of samples whose spoken question is checked by offline ASR
    asr_min_recall: Float  # share of the question's words the ASR must hear (espeak + generic LM ~0.3-0.5)
    tts: TTSParams
    llm: LLMParams
    ray: RayParams
    align_facts: Bool = False  # spaces before a column fact a TiS think block would cut (tasks/synth/blocks.py)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ParamsError("synthesize.sources is empty; add at least {kind: builtin}")
        if self.num_problems < 0 or self.text_pool < 0:
            raise ParamsError(f"synthesize.num_problems and text_pool must be >= 0, got {self.num_problems}, "
                              f"{self.text_pool}")
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
    # speak:think ratios the TiS training stages draw from, one per example per epoch (seeded); the
    # drift constraints are recomputed for the drawn ratio. Empty: every example at speak:think.
    mix: tuple[tuple[Int, Int], ...]

    def __post_init__(self) -> None:
        _check(self.speak >= 1 and self.think >= 1,
               f"schedule needs speak >= 1 and think >= 1, got speak={self.speak} think={self.think}")
        for pair in self.mix:
            _check(len(pair) == 2 and min(pair) >= 1,
                   f"schedule.mix holds [speak, think] pairs, each >= 1; got {list(pair)}")
        _check(len(set(self.mix)) == len(self.mix), f"schedule.mix lists a ratio twice: {[list(m) for m in self.mix]}")


@dataclass(frozen=True, config=_STRICT)
class ModelParams:
    source: Str  # "tiny" (random init built from `tiny`) or a local checkpoint dir / hub id
    dtype: Literal["auto", "bf16", "fp32"]
    tokenizer_vocab_size: Int
    tokenizer_corpus: Int  # generated problems the tiny tokenizer is trained on
    tiny: TinyDims
    stream_markers: Bool = False  # each thinker position also reads its stream's control-token row (models/streams.py)
    stream_mask: Bool = False  # a reasoning position never attends to a response position (models/streams.py)
    stream_clock: Bool = False  # with the mask: the reasoning's rope positions run on its own clock (models/streams.py)
    # train the audio encoder wherever the adapter trains (align, pretrain, acoustic_tis): auto = when the model is
    # built from config (source tiny: a random encoder); frozen = the report's freeze table (a pretrained encoder)
    audio_encoder: Literal["auto", "train", "frozen"] = "auto"
    # after align, the ear (audio encoder + adapter) stays as align trained it: frozen in pretrain and acoustic_tis,
    # whose LLM learns to read it (tasks/core/stages.py keeping_ear); off = the report's table (the adapter trains);
    # auto = on for a model built from config (source tiny), off for a checkpoint
    keep_ear: Switch = "off"
    # with a spoken question the reasoning first writes what it heard (the question, its numbers as digits),
    # in the stages whose targets hold reasoning (pretrain, acoustic_tis, talker): tasks/core/examples.py heard_first
    transcribe_first: Bool = False
    # the form of that transcript: digits (the question as a text prompt holds it), words (as said and as align
    # learned to write it), or both (the words, then the same question with digits: the conversion written out)
    transcript: Literal["digits", "words", "both"] = "digits"

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
    length_group: Int  # batches per length group (rows of similar length batched together); 1 = off
    state_cache_mb: Int = 0  # talker stages: the frozen thinker's states of rows seen, kept (models.talker.ThinkerStateCache)

    def __post_init__(self) -> None:
        for k in ("grad_accum", "log_every", "checkpoint_every", "keep_checkpoints", "length_group"):
            _check(getattr(self, k) >= 1, f"trainer.{k} must be >= 1, got {getattr(self, k)}")
        _check(self.feature_cache_mb >= 0, "trainer.feature_cache_mb must be >= 0")
        _check(self.state_cache_mb >= 0, f"trainer.state_cache_mb must be >= 0 (0 = keep none), got {self.state_cache_mb}")


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
class AlignParams(StageParams):
    # phase 1a (the first half of the steps: the audio adapter alone, the LLM frozen): auto = on for a checkpoint
    # (a pretrained LLM to align to), off when the model is built from config (a random LLM: nothing to align to)
    adapter_phase: Switch = "auto"
    # train on the spoken rows of these kinds only (empty: every row), e.g. [short_digit]: the ear learns one
    # short sentence form first, where it needs tens of thousands of examples of the mixture's forms
    kinds: tuple[Str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_kinds(self.kinds, "align.kinds", " (the `kind` column of data/synthesize), or [] for every row")


@dataclass(frozen=True, config=_STRICT)
class PretrainParams(StageParams):
    text_fraction: Float  # share of problems given as text instead of audio (seeded, same every epoch)
    words_fraction: Float  # share of text prompts whose numbers are words (as a transcript reads them)
    text_pool: Bool = False  # text examples from the dataset's text-only pool (text.parquet), spoken ones from train

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.text_fraction <= 1.0, f"text_fraction must be within [0, 1], got {self.text_fraction}")
        _check(0.0 <= self.words_fraction <= 1.0, f"words_fraction must be within [0, 1], got {self.words_fraction}")


@dataclass(frozen=True, config=_STRICT)
class TalkerParams(StageParams):
    """talker: how it reads the thinker (models/talker.py PACES): ``position``, one thinker position per
    codec frame; ``duration``, each spoken token for as long as it takes to say. ``timing`` (duration
    pace, training): ``aligned`` puts each token on the frames where the TTS said it
    (``response_starts``, tasks/synth/timing.py), ``estimated`` spreads a clip by estimated seconds.
    ``previous``: ``codes`` feeds each step the codec id before it (autoregressive), ``none`` feeds none, so
    every frame is said from the text alone (models.talker PREVIOUS). ``numbers`` (duration pace): how long
    a number written in digits is held while said: ``words``, the time of its words shared among its
    tokens (known once it ends); ``digits``, 0.45 s a digit (models/saying.py). ``seconds`` (duration pace,
    streaming): ``learned``, each token's seconds measured on the training speech's aligned timing
    (models.talker.learn_seconds); ``estimate``, from its letters, digits and punctuation."""

    pace: Literal["position", "duration"]
    timing: Literal["aligned", "estimated"] = "aligned"
    numbers: Literal["words", "digits"] = "words"
    seconds: Literal["learned", "estimate"] = "estimate"
    previous: Literal["codes", "none"] = "codes"
    prev_dropout: Float = 0.0  # share of previous codec ids hidden in training (models.talker.build_talker_inputs)
    self_feed: Float = 0.0  # share of previous codec ids fed from the talker's own draws (models.talker.own_previous)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.prev_dropout < 1.0, f"talker.prev_dropout must be in [0, 1), got {self.prev_dropout}")
        _check(0.0 <= self.self_feed <= 1.0, f"talker.self_feed must be in [0, 1], got {self.self_feed}")
        _check(self.previous == "codes" or (self.prev_dropout == 0 and self.self_feed == 0),
               "talker.prev_dropout and talker.self_feed act on the previous codec ids, which talker.previous: none "
               f"does not feed (got {self.prev_dropout}, {self.self_feed}); set them to 0 or talker.previous: codes")


@dataclass(frozen=True, config=_STRICT)
class TisStageParams(StageParams):
    """acoustic_tis (and text_tis): a held-out accuracy probe while training (tasks/core/probe.py)."""

    probe_every: Int  # every N steps (and after the last) decode probe_problems validation problems; 0 = off
    probe_problems: Int

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.probe_every >= 0 and self.probe_problems >= 0,
               f"probe_every and probe_problems must be >= 0, got {self.probe_every}, {self.probe_problems}")


@dataclass(frozen=True, config=_STRICT)
class AcousticTisParams(TisStageParams):
    """acoustic_tis: spoken prompts, with a share of text ones rehearsing text_tis (``replay`` input)."""

    text_fraction: Float  # share of examples given as text instead of audio (drawn anew each epoch)
    words_fraction: Float  # share of those text prompts read from the transcript (numbers in words)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.text_fraction < 1.0,
               f"acoustic_tis.text_fraction must be in [0, 1) (1 would leave nothing spoken), got {self.text_fraction}")
        _check(0.0 <= self.words_fraction <= 1.0,
               f"acoustic_tis.words_fraction must be within [0, 1], got {self.words_fraction}")


@dataclass(frozen=True, config=_STRICT)
class TextTisParams(TisStageParams):
    """text_tis: text prompts, in digits or words, from the spoken set or the larger text pool."""

    words_fraction: Float  # share of text prompts whose numbers are words (as a transcript reads them)
    text_pool: Bool  # train on the dataset's text-only pool (text.parquet) when it has one
    spoken_fraction: Float = 0.0  # share of examples asked spoken instead (the spoken set's audio; the ear is not
    # trained here): the layout learned on text is also learned on what the ear gives (tasks.core.stages.for_params)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 <= self.words_fraction <= 1.0, f"words_fraction must be within [0, 1], got {self.words_fraction}")
        _check(0.0 <= self.spoken_fraction < 1.0,
               f"text_tis.spoken_fraction must be in [0, 1) (1 would leave no text), got {self.spoken_fraction}")


@dataclass(frozen=True, config=_STRICT)
class CodecParams:
    """The speech codec whose tokens the talker predicts (models/codec.py)."""

    kind: Literal["world", "mimi"]  # world: fitted here, offline; mimi: pretrained, local path
    path: Str  # mimi only: local checkpoint directory
    codebook_size: Int
    n_codebooks: Int
    fit_clips: Int
    seed: Int
    f0_speed: Int  # world: pyworld dio's decimation for the f0 track (1 = full rate; 4 ~40 % less analysis time)

    def __post_init__(self) -> None:
        _check(1 <= self.f0_speed <= 12, f"codec.f0_speed must be 1..12 (pyworld dio's decimation), got {self.f0_speed}")
        _check(not (self.kind == "mimi" and not self.path),
               "codec.kind=mimi needs codec.path (a local Mimi checkpoint directory)")


@dataclass(frozen=True, config=_STRICT)
class MlflowParams:
    experiment: Str


@dataclass(frozen=True, config=_STRICT)
class FlowParams:
    """How the pipeline flow runs the DVC stages (read by flows/, by no stage: changing it reruns nothing)."""

    # at most this many stages at once: stages independent in DVC's graph that may share the machine (the codec,
    # the training stages) run side by side and split its cores (tasks/core/cpu.py); 1 = one after another
    parallel: Int

    def __post_init__(self) -> None:
        _check(self.parallel >= 1, f"flow.parallel must be >= 1 (1 = one stage at a time), got {self.parallel}")


@dataclass(frozen=True, config=_STRICT)
class DvcParams:
    remote: Str
    # A local directory by default; any DVC URL works (s3://, gs://, ssh://) with its plugin installed.
    remote_url: Str


@dataclass(frozen=True, config=_STRICT)
class PackageParams:
    """The `package` stage: the trained TiS model into the BentoML model store, then a Bento."""

    model_name: Str  # BentoML model name (the service loads `<model_name>:<version>`)
    bento_name: Str  # Bento name (`bentoml serve <bento_name>:latest`)

    def __post_init__(self) -> None:
        import re

        for k in ("model_name", "bento_name"):
            _check(bool(re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", getattr(self, k))),
                   f"package.{k} must be a BentoML name (lowercase letters, digits, '.', '_', '-'), "
                   f"got {getattr(self, k)!r}")


@dataclass(frozen=True, config=_STRICT)
class ServeParams:
    """The streaming service (service.py, serve/): where it listens and what a request may ask."""

    host: Str  # 127.0.0.1 = this machine only; `bentoml serve --host 0.0.0.0` opens it up
    port: Int
    token_env: Str  # env var holding a bearer token every API call must send; unset or empty = no auth
    max_active: Int  # at most this many sessions the model steps in turn (1 = one at a time, as moshi)
    admit_ahead_s: Float  # 0: admit up to max_active; > 0: also wait until every running spoken answer has this much audio in hand
    max_queue: Int  # requests waiting for a slot; more get 503 with a Retry-After from the measured queue
    timeout_s: Float  # the longest a request may run (queue wait included)
    body_timeout_s: Float  # an upload that sends nothing for this long gets 408 (a stalled client holds no slot)
    keepalive_s: Float  # an SSE comment this often while a request waits (finds gone clients early)
    max_body_mb: Float  # request body (upload or JSON) at most this
    max_input_seconds: Float  # spoken question at most this long
    min_sample_rate: Int  # uploads outside [min, max] Hz are refused; inside, resampled to 16 kHz
    max_sample_rate: Int
    silence_dbfs: Float  # a question whose RMS level is below this is refused as silent
    max_text_chars: Int
    default_max_new_tokens: Int  # thinker positions when a request does not say
    max_new_tokens: Int  # the most a request may ask
    max_schedule: Int  # speak and think each at most this
    max_temperature: Float
    max_audio_seconds: Float  # the spoken answer stops here if the talker never ends it
    gpus: Int  # GPUs the service asks BentoML for (0 or 1); the model uses CUDA whenever torch sees one

    def __post_init__(self) -> None:
        _check(1 <= self.port <= 65535, f"serve.port must be a TCP port, got {self.port}")
        _check(self.max_active >= 1 and self.max_queue >= 0 and self.admit_ahead_s >= 0,
               f"serve needs max_active >= 1, max_queue >= 0, admit_ahead_s >= 0, got {self.max_active}, "
               f"{self.max_queue}, {self.admit_ahead_s}")
        for k in ("timeout_s", "body_timeout_s", "keepalive_s", "max_body_mb", "max_input_seconds", "max_audio_seconds"):
            _check(getattr(self, k) > 0, f"serve.{k} must be > 0, got {getattr(self, k)}")
        _check(0 < self.min_sample_rate <= self.max_sample_rate,
               f"serve needs 0 < min_sample_rate <= max_sample_rate, got {self.min_sample_rate}, {self.max_sample_rate}")
        _check(1 <= self.default_max_new_tokens <= self.max_new_tokens,
               "serve needs 1 <= default_max_new_tokens <= max_new_tokens")
        _check(self.max_text_chars >= 1 and self.max_schedule >= 1 and self.max_temperature >= 0,
               "serve needs max_text_chars >= 1, max_schedule >= 1, max_temperature >= 0")
        _check(self.gpus in (0, 1), f"serve.gpus must be 0 or 1 (one worker, one model copy), got {self.gpus}")


@dataclass(frozen=True, config=_STRICT)
class EvaluateParams:
    """The `evaluate` stage (Spoken-MQA, tasks/evaluate): the questions, the decoding, the sweep."""

    benchmark: Str  # a registered benchmark, "name" or "name:argument" (tasks/evaluate/benchmarks/__init__.py)
    splits: tuple[Str, ...]
    limit_per_split: Int  # questions per split (proxy: made; real: AudioBench's seed-42 subset); 0 = all
    # Each question asked with each input: audio (the spoken question, Spoken-MQA) and/or text (its
    # transcript). The first is the main one: the sweep, the spoken answers and the plain split/metric keys.
    inputs: tuple[Literal["audio", "text"], ...]
    audio_per_split: Int  # answers per split also spoken (talker + codec): first-audio latency, gaps, wavs
    max_new_tokens: Int  # thinker positions at schedule speak:think; other ratios get as many speak slots
    max_audio_seconds: Float  # a spoken answer stops here if the talker never ends it
    temperature: Float  # 0 = greedy
    seed: Int  # proxy questions and sampling
    sweep: tuple[tuple[Int, Int], ...]  # speak:think ratios the TiS model is also decoded at
    sweep_per_split: Int  # the first questions of each split that the sweep decodes; 0 = no sweep
    ray_workers: Int  # 0: decode in this process; N: N Ray Data actors (RAY_ADDRESS joins a cluster)
    decode_batch: Int  # answers each process decodes together (one batched forward per position; models/runner.py)

    def __post_init__(self) -> None:
        _check(self.decode_batch >= 1, f"evaluate.decode_batch must be >= 1 (1 = one answer at a time), got "
               f"{self.decode_batch}")
        _check(bool(self.benchmark), "evaluate.benchmark is empty; use proxy, spoken_mqa:<hub id or path>, "
               "gsm8k:<file>, svamp:<file> or local:<file>?question=..&answer=..")
        _check(bool(self.inputs) and len(set(self.inputs)) == len(self.inputs),
               f"evaluate.inputs must list audio and/or text once each, got {list(self.inputs)}")
        _check(bool(self.splits) and len(set(self.splits)) == len(self.splits),
               f"evaluate.splits must list splits once each, got {list(self.splits)}")
        for k in ("limit_per_split", "audio_per_split", "sweep_per_split", "ray_workers"):
            _check(getattr(self, k) >= 0, f"evaluate.{k} must be >= 0, got {getattr(self, k)}")
        _check(self.max_new_tokens >= 1, f"evaluate.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        _check(self.max_audio_seconds > 0, f"evaluate.max_audio_seconds must be > 0, got {self.max_audio_seconds}")
        _check(self.temperature >= 0, f"evaluate.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        for pair in self.sweep:
            _check(len(pair) == 2 and min(pair) >= 1,
                   f"evaluate.sweep holds [speak, think] pairs, each >= 1; got {list(pair)}")
        _check(len(set(self.sweep)) == len(self.sweep), f"evaluate.sweep lists a ratio twice: {[list(m) for m in self.sweep]}")


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
    align: AlignParams
    pretrain: PretrainParams
    text_tis: TextTisParams
    acoustic_tis: AcousticTisParams
    talker: TalkerParams
    evaluate: EvaluateParams
    mlflow: MlflowParams
    flow: FlowParams
    dvc: DvcParams
    package: PackageParams
    serve: ServeParams

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

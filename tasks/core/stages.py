"""The five training stages as one table, read by one training loop (tasks/core/trainer.py).

Freeze table from the report (🔥 trained, everything else frozen):

| stage          | input | target       | trains                                   |
|----------------|-------|--------------|------------------------------------------|
| align (1a)     | audio | transcript   | adapter                                  |
| align (1b)     | audio | transcript   | adapter, embedding, thinker_llm          |
| pretrain       | mixed | solution     | adapter, embedding, thinker_llm          |
| text_tis       | text* | interleaved  | embedding, thinker_llm                   |
| acoustic_tis   | replay| interleaved  | adapter, thinker_llm                     |
| talker         | audio | speech       | talker                                   |

(*) ``mixed`` when ``text_tis.spoken_fraction`` > 0 (a share of its questions spoken; ``hearing``).

A stage with two phases (align: 1a then 1b) runs them in order inside one DVC stage, splitting its
steps by ``split`` (the fraction of steps spent in the first phase).

Inputs: ``text`` (chat prompt of the written question), ``audio`` (log-mel of the spoken question,
``<|AUDIO|>`` placeholders in the prompt), ``mixed`` (a seeded ``text_fraction`` of the samples as
text, the rest as audio), ``replay`` (audio, with a seeded ``text_fraction`` of the examples as text,
drawn anew each epoch: rehearsal of the text stage's skill, which audio-only training forgets). Targets: ``transcript`` (the spoken question's text + eos), ``solution``
(reasoning + response + eos), ``interleaved`` (the TiS / think-first layout of ``--format``),
``speech`` (the interleaved layout through the frozen thinker; the talker predicts the response
audio's codec ids). Each target names its layout and its loss in ``TARGETS``; the trainer reads
those rows and has no per-stage branches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Sequence

from tasks.core.stage import run_name

Input = Literal["text", "audio", "mixed", "replay"]
Target = Literal["transcript", "solution", "interleaved", "speech"]


@dataclass(frozen=True)
class TargetSpec:
    layout: Literal["transcript", "solution", "interleaved"]  # the thinker sequence (models.format for interleaved)
    loss: Literal["thinker", "talker"]  # which head is scored: thinker LM or talker codec CE
    per_format: bool  # depends on the sequence format (tis / think_first): a DVC matrix stage
    codec: bool = False  # needs the speech codec (checkpoints/codec) for its targets


TARGETS: dict[str, TargetSpec] = {
    "transcript": TargetSpec("transcript", "thinker", per_format=False),
    "solution": TargetSpec("solution", "thinker", per_format=False),
    "interleaved": TargetSpec("interleaved", "thinker", per_format=True),
    "speech": TargetSpec("interleaved", "talker", per_format=True, codec=True),
}


@dataclass(frozen=True)
class Phase:
    name: str
    trainable: frozenset[str]


@dataclass(frozen=True)
class StageSpec:
    name: str
    input: Input
    target: Target
    phases: tuple[Phase, ...]
    upstream: str  # the stage whose checkpoint this one starts from (same format where per_format)
    split: float = 1.0  # fraction of steps in phase 0 when there are two phases

    @property
    def t(self) -> TargetSpec:
        return TARGETS[self.target]

    @property
    def per_format(self) -> bool:
        return self.t.per_format

    def mixes(self, text_fraction: float) -> bool:
        """Do this stage's batches mix text and spoken prompts at ``text_fraction``?"""
        return self.input == "mixed" or (self.input == "replay" and text_fraction > 0.0)

    @property
    def trainable(self) -> frozenset[str]:
        """Every group trained in some phase (the optimizer's parameters)."""
        return frozenset().union(*(ph.trainable for ph in self.phases))

    def phase_at(self, step: int, steps: int) -> Phase:
        if len(self.phases) == 1:
            return self.phases[0]
        return self.phases[0] if step < round(steps * self.split) else self.phases[1]


def with_audio_encoder(spec: StageSpec, train: bool) -> StageSpec:
    """``spec`` with the audio encoder trained wherever the adapter is (``train``), else ``spec`` itself.

    The report's freeze table keeps the encoder frozen: a real Qwen2.5-Omni's is pretrained (Whisper-like).
    A model built from config (``model.source: tiny``) has a randomly initialised one, which frozen is a random
    feature map: ``align`` then heard 21 % of the questions' number words after 1500 steps, 49 % with the
    encoder trained (README, "The audio encoder learns to hear")."""
    if not train:
        return spec
    phases = tuple(Phase(ph.name, ph.trainable | {"audio_encoder"}) if "adapter" in ph.trainable else ph
                   for ph in spec.phases)
    return replace(spec, phases=phases)


EAR = frozenset({"audio_encoder", "adapter"})


def keeping_ear(spec: StageSpec) -> StageSpec:
    """``spec`` with the ear (audio encoder and adapter) frozen: params.yaml's ``model.keep_ear``, for the stages
    after ``align``. Trained on, with a new target (the transcript in digits, then the solution) and a text share,
    the ear ``align`` trained was lost in some runs and not in others: ``pretrain`` from one ``align`` (85 % of its
    short-digit questions heard whole) heard 6.7 % after it with the ear trained, 72 % with it kept (README, "The
    ear, kept")."""
    if spec.name == "align":
        return spec
    return replace(spec, phases=tuple(Phase(ph.name, ph.trainable - EAR) for ph in spec.phases))


def trains_audio_encoder(p) -> bool:
    """params.yaml's ``model.audio_encoder``: ``train``, ``frozen``, or ``auto`` (train it when the model is built
    from config, ``model.source: tiny``; frozen for a checkpoint's pretrained one)."""
    choice = p.model.audio_encoder
    return choice == "train" or (choice == "auto" and p.model.source == "tiny")


def runs_adapter_phase(p) -> bool:
    """params.yaml's ``align.adapter_phase``: ``on``, ``off``, or ``auto`` (on for a checkpoint, whose pretrained
    LLM the adapter aligns to; off when the model is built from config, ``model.source: tiny``: a frozen random LLM
    is nothing to align to, and the same 300 steps all in phase 1b heard 25.8 % of the number words against 13.8 %)."""
    choice = p.align.adapter_phase
    return choice == "on" or (choice == "auto" and p.model.source != "tiny")


def without_adapter_phase(spec: StageSpec) -> StageSpec:
    """``spec`` with only its last phase (every step trains what the last phase trains)."""
    return replace(spec, phases=spec.phases[-1:], split=1.0)


def for_params(name: str, p) -> StageSpec:
    """The stage ``name`` as params ``p`` train it (the audio encoder added where ``model.audio_encoder`` says;
    align without its adapter-only phase where ``align.adapter_phase`` says; the ear frozen after align where
    ``model.keep_ear`` says)."""
    s = spec(name)
    if len(s.phases) > 1 and name == "align" and not runs_adapter_phase(p):
        s = without_adapter_phase(s)
    s = with_audio_encoder(s, trains_audio_encoder(p))
    if name == "text_tis" and p.text_tis.spoken_fraction > 0:
        s = hearing(s)
    return keeping_ear(s) if keeps_ear(p) else s


def hearing(spec: StageSpec) -> StageSpec:
    """The text stage with a share of its questions spoken (``text_tis.spoken_fraction``): ``mixed`` input, text
    from the text pool and audio from the spoken set, as ``pretrain`` reads them. Its freeze table is unchanged
    (embedding and LLM; the ear is not trained). Trained on text alone, the TiS layout is learned on text
    prompts only, and ``acoustic_tis`` must then teach the LLM to read the ear inside it."""
    return replace(spec, input="mixed")


def keeps_ear(p) -> bool:
    """params.yaml's ``model.keep_ear``: ``on``, ``off``, or ``auto`` (on when the model is built from config,
    ``model.source: tiny``, whose ear ``align`` trains from random; off for a checkpoint: the report's table)."""
    choice = p.model.keep_ear
    return choice == "on" or (choice == "auto" and p.model.source == "tiny")


def _p(name: str, *groups: str) -> Phase:
    return Phase(name, frozenset(groups))


LLM = ("embedding", "thinker_llm")
STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in [
        StageSpec("align", "audio", "transcript",
                  (_p("align_1a", "adapter"), _p("align_1b", "adapter", *LLM)), "init_model", split=0.5),
        StageSpec("pretrain", "mixed", "solution", (_p("pretrain", "adapter", *LLM),), "align"),
        StageSpec("text_tis", "text", "interleaved", (_p("text_tis", *LLM),), "pretrain"),
        StageSpec("acoustic_tis", "replay", "interleaved", (_p("acoustic_tis", "adapter", "thinker_llm"),), "text_tis"),
        StageSpec("talker", "audio", "speech", (_p("talker", "talker"),), "acoustic_tis"),
    ]
}
ORDER = tuple(STAGES)


@dataclass(frozen=True)
class PipelineStage:
    """One DVC stage of the pipeline: its name (also its module's ``STAGE``), the module DVC runs
    (``python -m <module>``) and whether it runs once per sequence format (a DVC matrix stage)."""

    name: str
    module: str
    per_format: bool
    # may run beside another stage, on the cores the flow lends it (tasks/core/cpu.py): the codec, the training
    # stages, and compare beside package (light, ~7 and ~11 s, both ready once evaluation ends). The others run
    # alone: synthesize starts Ray workers over every core.
    beside: bool = False
    # may run beside its own other format's run only (evaluate@tis beside evaluate@think_first): evaluate's latency
    # columns are wall time, so no training shares its cores, but the two formats decode side by side on one core
    # each, the same conditions for both (the tiny model decodes about as fast on one thread as on two: 48 against
    # 50 s for evaluate@tis; the pair takes 51 s at once against 84 s one after the other)
    peers: bool = False


# The pipeline, in order: the one list the DVC stages (dvc.yaml, checked by tests/test_pipeline_stages.py),
# the Prefect flow's tasks and the MLflow child runs follow. Adding a stage: its module and its line here
# (and its dvc.yaml entry, which the test then demands in the same place).
PIPELINE: tuple[PipelineStage, ...] = (
    PipelineStage("init_model", "tasks.init_model", False),
    PipelineStage("synthesize", "tasks.synthesize", False),
    PipelineStage("codec", "tasks.codec", False, beside=True),
    *(PipelineStage(s.name, f"tasks.{s.name}", s.per_format, beside=True) for s in STAGES.values()),
    PipelineStage("evaluate", "tasks.evaluate", True, peers=True),
    PipelineStage("compare", "tasks.compare", False, beside=True),
    PipelineStage("package", "tasks.package", False, beside=True),
)


def pipeline_runs(formats: Sequence[str]) -> list[str]:
    """Every run of the pipeline in order, matrix stages expanded per format as DVC expands them
    (``["init_model", ..., "text_tis@tis", "text_tis@think_first", ...]``)."""
    return [run_name(s.name, f) for s in PIPELINE for f in (formats if s.per_format else (None,))]


def runs_beside(run: str) -> bool:
    """May the pipeline run ``run`` (a DVC stage name, ``text_tis@tis``) beside another stage?"""
    base = run.split("@")[0]
    return any(s.beside for s in PIPELINE if s.name == base)


def may_share(run: str, other: str) -> bool:
    """May the pipeline run ``run`` and ``other`` (DVC stage names) at once? Both may run beside any stage that
    may (``beside``), or they are two formats' runs of one ``peers`` stage (``evaluate@tis``, ``evaluate@think_first``)."""
    if runs_beside(run) and runs_beside(other):
        return True
    base, other_base = run.split("@")[0], other.split("@")[0]
    return run != other and base == other_base and any(s.peers for s in PIPELINE if s.name == base)


def spec(name: str) -> StageSpec:
    if name not in STAGES:
        raise KeyError(f"unknown training stage {name!r}; stages are {list(STAGES)}")
    return STAGES[name]

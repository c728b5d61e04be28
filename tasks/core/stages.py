"""The five training stages as one table, read by one training loop (tasks/core/trainer.py).

Freeze table from the report (🔥 trained, everything else frozen):

| stage          | input | target       | trains                                   |
|----------------|-------|--------------|------------------------------------------|
| align (1a)     | audio | transcript   | adapter                                  |
| align (1b)     | audio | transcript   | adapter, embedding, thinker_llm          |
| pretrain       | mixed | solution     | adapter, embedding, thinker_llm          |
| text_tis       | text  | interleaved  | embedding, thinker_llm                   |
| acoustic_tis   | audio | interleaved  | adapter, thinker_llm                     |
| talker         | audio | speech       | talker                                   |

A stage with two phases (align: 1a then 1b) runs them in order inside one DVC stage, splitting its
steps by ``split`` (the fraction of steps spent in the first phase).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Input = Literal["text", "audio", "mixed"]
Target = Literal["transcript", "solution", "interleaved", "speech"]


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
    upstream: str  # the stage whose checkpoint this one starts from
    split: float = 1.0  # fraction of steps in phase 0 when there are two phases

    def phase_at(self, step: int, steps: int) -> Phase:
        if len(self.phases) == 1:
            return self.phases[0]
        return self.phases[0] if step < round(steps * self.split) else self.phases[1]


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
        StageSpec("acoustic_tis", "audio", "interleaved", (_p("acoustic_tis", "adapter", "thinker_llm"),), "text_tis"),
        StageSpec("talker", "audio", "speech", (_p("talker", "talker"),), "acoustic_tis"),
    ]
}
ORDER = tuple(STAGES)


def spec(name: str) -> StageSpec:
    if name not in STAGES:
        raise KeyError(f"unknown training stage {name!r}; stages are {list(STAGES)}")
    return STAGES[name]

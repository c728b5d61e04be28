"""The thinking-in-speaking (TiS) sequence format and the think-first baseline.

A TiS sequence is ``prompt`` followed by blocks. Each block is

    <|speak|> r r  <|think|> t t t t t t t t        (speak=2, think=8)

where ``r`` are slots of the *response stream* (spoken aloud: response tokens, then ``eos``) and ``t``
are slots of the *reasoning stream* (silent: reasoning tokens, then ``pad`` once reasoning is done).
The response goes first so speech starts at once. The sequence ends right after ``eos``, inside the
block that holds it. A speak slot may also hold ``pad``: that delays a response token to a later
block (how synthesis avoids anticipation drift, see ``min_block``).

Control tokens (``<|speak|>``, ``<|think|>``) are inserted by the schedule and excluded from the loss;
at decoding time they are forced, so the model never predicts them. Pads and ``eos`` are predicted.

The same :class:`ScheduleCursor` drives building (``interleave``), splitting (``deinterleave``) and,
later, streaming decoding: it says, position by position, which slot comes next.

Run ``python -m models.format`` to print an example.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, Sequence

Format = Literal["tis", "think_first"]


class FormatError(ValueError):
    """An input that cannot be laid out under the schedule (the message says why and what to do)."""


class Role(enum.IntEnum):
    """What a position of a sequence is; the talker only sees RESPONSE positions."""

    PROMPT = 0
    CONTROL = 1
    RESPONSE = 2  # response stream: response tokens, speak-slot pads, eos
    REASONING = 3  # reasoning stream: reasoning tokens, think-slot pads


class Slot(enum.Enum):
    SPEAK_CONTROL = "speak_control"
    SPEAK = "speak"
    THINK_CONTROL = "think_control"
    THINK = "think"


@dataclass(frozen=True)
class Schedule:
    """Speak ``speak`` response slots, then think ``think`` reasoning slots, repeated."""

    speak: int = 2
    think: int = 8

    def __post_init__(self) -> None:
        if self.speak < 1 or self.think < 1:
            raise FormatError(
                f"schedule needs speak >= 1 and think >= 1, got speak={self.speak} think={self.think}; "
                "set schedule.speak / schedule.think in params.yaml"
            )

    @property
    def block_len(self) -> int:
        return self.speak + self.think + 2  # two control tokens


@dataclass(frozen=True)
class ControlIds:
    """Token ids the format needs; taken from the tokenizer (``models.tokenizer.control_ids``)."""

    speak: int
    think: int
    pad: int
    eos: int

    def __post_init__(self) -> None:
        ids = [self.speak, self.think, self.pad, self.eos]
        if len(set(ids)) != 4:
            raise FormatError(f"control ids must be distinct, got {self}")

    @property
    def controls(self) -> frozenset[int]:
        return frozenset((self.speak, self.think))


@dataclass
class Layout:
    """A laid-out sequence: ids, which positions carry loss, and each position's role."""

    input_ids: list[int]
    loss_mask: list[bool]
    roles: list[Role]
    prompt_len: int
    n_blocks: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class ScheduleCursor:
    """Walks the TiS schedule one generated position at a time.

    ``next_slot()`` tells what the next position must be; ``advance(token)`` records what was put
    there. Control slots have exactly one legal token (``forced_token``). Generation ends after
    ``eos`` is placed in a speak slot (``done``). State is tiny, so a streaming decoder keeps one per
    request.
    """

    schedule: Schedule
    ids: ControlIds
    block: int = 0
    pos_in_block: int = 0
    done: bool = False
    reasoning_done: bool = field(default=False)

    def next_slot(self) -> Slot:
        if self.done:
            raise FormatError("the sequence already ended with eos; start a new cursor")
        p = self.pos_in_block
        s = self.schedule
        if p == 0:
            return Slot.SPEAK_CONTROL
        if p <= s.speak:
            return Slot.SPEAK
        if p == s.speak + 1:
            return Slot.THINK_CONTROL
        return Slot.THINK

    def forced_token(self) -> int | None:
        slot = self.next_slot()
        if slot is Slot.SPEAK_CONTROL:
            return self.ids.speak
        if slot is Slot.THINK_CONTROL:
            return self.ids.think
        return None

    def advance(self, token: int) -> Slot:
        """Record ``token`` at the next position; returns the slot it filled."""
        slot = self.next_slot()
        forced = self.forced_token()
        if forced is not None and token != forced:
            raise FormatError(f"position {slot.value} must hold control id {forced}, got {token}")
        if slot is Slot.THINK:
            if token == self.ids.pad:
                self.reasoning_done = True
            elif self.reasoning_done:
                raise FormatError("reasoning token after reasoning pads: reasoning must be contiguous")
        if slot is Slot.SPEAK and token == self.ids.eos:
            self.done = True
        self.pos_in_block += 1
        if self.pos_in_block == self.schedule.block_len:
            self.pos_in_block = 0
            self.block += 1
        return slot


def role_of(slot: Slot) -> Role:
    if slot in (Slot.SPEAK_CONTROL, Slot.THINK_CONTROL):
        return Role.CONTROL
    return Role.RESPONSE if slot is Slot.SPEAK else Role.REASONING


def _check_tokens(name: str, tokens: Sequence[int], ids: ControlIds) -> None:
    # A chat prompt legitimately holds eos (it ends the user turn); the streams may not.
    reserved = (ids.speak, ids.think, ids.pad) if name == "prompt" else (ids.speak, ids.think, ids.pad, ids.eos)
    bad = [t for t in tokens if t in reserved]
    if bad:
        raise FormatError(
            f"{name} contains control/pad/eos ids {sorted(set(bad))}; pass plain text token ids "
            "(the format inserts control tokens, pads and eos itself)"
        )


def earliest_eos_block(n_reasoning: int, schedule: Schedule) -> int:
    """First block whose speak slots come after the whole reasoning stream."""
    return -(-n_reasoning // schedule.think)  # ceil


def interleave(
    prompt: Sequence[int],
    response: Sequence[int],
    reasoning: Sequence[int],
    ids: ControlIds,
    schedule: Schedule = Schedule(),
    min_block: Sequence[int] | None = None,
    delay_eos: bool = False,
) -> Layout:
    """Lay out prompt, response and reasoning as one TiS sequence.

    ``min_block[i]`` (optional, one per response token) is the earliest block in which response
    token ``i`` may be spoken; earlier speak slots are filled with ``pad``. This is how a caller keeps
    a number from being said before the reasoning has derived it.

    The response must not end before the reasoning: ``eos`` may only come in a block after the last
    reasoning token. With ``delay_eos=False`` a response that is too short raises ``FormatError``;
    with ``delay_eos=True`` speak-slot pads hold the ``eos`` back until the reasoning is done.
    """
    if not response:
        raise FormatError("empty response: a TiS sample needs at least one response token")
    _check_tokens("prompt", prompt, ids)
    _check_tokens("response", response, ids)
    _check_tokens("reasoning", reasoning, ids)
    if min_block is not None and len(min_block) != len(response):
        raise FormatError(f"min_block has {len(min_block)} entries for {len(response)} response tokens")

    need_eos_block = earliest_eos_block(len(reasoning), schedule)
    if min_block is None:
        min_block = [0] * len(response)
    eos_min = need_eos_block if delay_eos else 0

    # Place the response stream (tokens, then eos) into speak slots: slot j of block b has global
    # speak index b*speak + j. Each item goes to the first free slot at or after its earliest block.
    speak_stream: list[int] = []
    for tok, mb in list(zip(response, min_block)) + [(ids.eos, eos_min)]:
        earliest = mb * schedule.speak
        while len(speak_stream) < earliest:
            speak_stream.append(ids.pad)
        speak_stream.append(tok)
    eos_block = (len(speak_stream) - 1) // schedule.speak
    if eos_block < need_eos_block:
        raise FormatError(
            f"response ends before reasoning: eos falls in block {eos_block} but the {len(reasoning)} "
            f"reasoning tokens fill think slots up to block {need_eos_block - 1} "
            f"(speak={schedule.speak}, think={schedule.think}); lengthen the response, shorten the "
            "reasoning, or pass delay_eos=True to hold the response back with pads"
        )

    out_ids = list(prompt)
    mask = [False] * len(prompt)
    roles = [Role.PROMPT] * len(prompt)
    cursor = ScheduleCursor(schedule, ids)
    si = ti = 0
    while not cursor.done:
        slot = cursor.next_slot()
        if slot is Slot.SPEAK_CONTROL or slot is Slot.THINK_CONTROL:
            tok = cursor.forced_token()
        elif slot is Slot.SPEAK:
            tok = speak_stream[si]
            si += 1
        else:
            tok = reasoning[ti] if ti < len(reasoning) else ids.pad
            ti += 1
        cursor.advance(tok)
        out_ids.append(tok)
        roles.append(role_of(slot))
        mask.append(role_of(slot) is not Role.CONTROL)
    return Layout(out_ids, mask, roles, len(prompt), n_blocks=cursor.block + 1)


def think_first(
    prompt: Sequence[int], response: Sequence[int], reasoning: Sequence[int], ids: ControlIds
) -> Layout:
    """Baseline: ``prompt <|think|> reasoning <|speak|> response eos`` (same tokens, no interleaving)."""
    if not response:
        raise FormatError("empty response: a sample needs at least one response token")
    _check_tokens("prompt", prompt, ids)
    _check_tokens("response", response, ids)
    _check_tokens("reasoning", reasoning, ids)
    body = [ids.think, *reasoning, ids.speak, *response, ids.eos]
    roles = (
        [Role.PROMPT] * len(prompt)
        + [Role.CONTROL]
        + [Role.REASONING] * len(reasoning)
        + [Role.CONTROL]
        + [Role.RESPONSE] * (len(response) + 1)
    )
    return Layout(
        list(prompt) + body, [r not in (Role.PROMPT, Role.CONTROL) for r in roles], roles, len(prompt), 1
    )


def build(
    fmt: Format,
    prompt: Sequence[int],
    response: Sequence[int],
    reasoning: Sequence[int],
    ids: ControlIds,
    schedule: Schedule = Schedule(),
    **kwargs,
) -> Layout:
    """Dispatch on the format switch that the training stages and the baseline share."""
    if fmt == "tis":
        return interleave(prompt, response, reasoning, ids, schedule, **kwargs)
    if fmt == "think_first":
        return think_first(prompt, response, reasoning, ids)
    raise FormatError(f"unknown format {fmt!r}; use 'tis' or 'think_first'")


@dataclass
class Split:
    """A generated sequence split back into its two streams (pads, controls and eos removed)."""

    response: list[int]
    reasoning: list[int]
    ended: bool  # eos was reached


def deinterleave(
    generated: Sequence[int], ids: ControlIds, schedule: Schedule = Schedule(), fmt: Format = "tis"
) -> Split:
    """Inverse of ``interleave``/``think_first`` on the part after the prompt.

    Works on truncated generations too (``ended`` is then False); stops at ``eos``.
    """
    response: list[int] = []
    reasoning: list[int] = []
    if fmt == "think_first":
        stream = None
        for tok in generated:
            if tok == ids.think:
                stream = reasoning
            elif tok == ids.speak:
                stream = response
            elif tok == ids.eos:
                return Split(response, reasoning, True)
            elif tok != ids.pad:
                if stream is None:
                    raise FormatError("think-first sequence must start with the think control token")
                stream.append(tok)
        return Split(response, reasoning, False)
    if fmt != "tis":
        raise FormatError(f"unknown format {fmt!r}; use 'tis' or 'think_first'")
    cursor = ScheduleCursor(schedule, ids)
    for tok in generated:
        slot = cursor.advance(tok)
        if slot is Slot.SPEAK and tok not in (ids.pad, ids.eos):
            response.append(tok)
        elif slot is Slot.THINK and tok != ids.pad:
            reasoning.append(tok)
        if cursor.done:
            return Split(response, reasoning, True)
    return Split(response, reasoning, False)


def _demo() -> None:
    ids = ControlIds(speak=-1, think=-2, pad=0, eos=-3)
    names = {-1: "<S>", -2: "<T>", 0: "_", -3: "<eos>"}
    seq = interleave([100, 101], list(range(1, 6)), list(range(11, 25)), ids)
    print(" ".join(names.get(t, str(t)) for t in seq.input_ids))
    print("loss:", "".join("x" if m else "." for m in seq.loss_mask))


if __name__ == "__main__":
    _demo()

"""The thinking-in-speaking (TiS) sequence format and the think-first baseline, one cursor each.

A TiS sequence is ``prompt`` followed by blocks. Each block is

    <|speak|> r r  <|think|> t t t t t t t t        (speak=2, think=8)

where ``r`` are slots of the *response stream* (spoken aloud: response tokens, then ``eos``) and ``t``
are slots of the *reasoning stream* (silent: reasoning tokens, then ``pad`` once reasoning is done).
The response goes first so speech starts at once. The sequence ends right after ``eos``, inside the
block that holds it. A speak slot may also hold ``pad``: that delays a response token to a later
block (how synthesis avoids anticipation drift, see ``min_block``). TiS control tokens are inserted
by the schedule: out of the loss and forced at decoding. Pads and ``eos`` are predicted.

The think-first baseline is ``prompt <|think|> reasoning <|speak|> response eos``. Its leading
``<|think|>`` is forced (out of the loss); its ``<|speak|>`` is *predicted*: it is how the model ends
its reasoning, so it is a loss target.

Each format is one cursor class behind the :class:`FormatCursor` interface (``cursor_for``). The
cursor alone knows the grammar, position by position: what the next slot is, which token is forced,
which ids are banned, and what role a placed token has and whether it is a loss target. Building
(``build``), splitting (``deinterleave``) and streaming decoding (``models.decode``) all walk it.

Run ``python -m models.format`` to print an example of each format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

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
    """The kind of the next position, before its token is known."""

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


@dataclass(frozen=True)
class Placed:
    """What a token became when the cursor placed it."""

    role: Role
    target: bool  # a loss target: predicted by the model (schedule-inserted controls are not)
    block: int  # TiS block it fell in (think-first: always 0)


class FormatCursor(Protocol):
    """Walks one format's grammar one generated position at a time (state is tiny: one per request).

    ``forced_token()`` is the one legal token of the next position when there is no choice (then
    decoding does not sample); otherwise the token may be anything but ``banned()``. ``advance``
    records a token, raises ``FormatError`` on an illegal one, and says what it became. ``done`` turns
    True after the token that ends the sequence. ``streams`` turns a sample's response and reasoning
    into the token streams that ``build`` draws from for speak and think slots.
    """

    done: bool
    block: int

    def next_slot(self) -> Slot: ...

    def forced_token(self) -> int | None: ...

    def banned(self) -> frozenset[int]: ...

    def advance(self, token: int) -> Placed: ...

    def streams(self, response: Sequence[int], reasoning: Sequence[int], **kwargs) -> tuple[list[int], list[int]]: ...


def earliest_eos_block(n_reasoning: int, schedule: Schedule) -> int:
    """First TiS block whose speak slots come after the whole reasoning stream."""
    return -(-n_reasoning // schedule.think)  # ceil


class TisCursor:
    """The TiS grammar: ``<|speak|>`` r*speak ``<|think|>`` t*think, repeated, ending after ``eos``.

    Speak slots hold a response token, a pad or eos; think slots a reasoning token or a pad, and once
    a think slot held a pad every later one must (reasoning is contiguous), so it is forced.
    """

    def __init__(self, schedule: Schedule, ids: ControlIds) -> None:
        self.schedule = schedule
        self.ids = ids
        self.block = 0
        self.pos_in_block = 0
        self.done = False
        self.reasoning_done = False
        self._ban_speak = frozenset((ids.speak, ids.think))
        self._ban_think = frozenset((ids.speak, ids.think, ids.eos))

    def next_slot(self) -> Slot:
        if self.done:
            raise FormatError("the sequence already ended with eos; start a new cursor")
        p, s = self.pos_in_block, self.schedule
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
        if slot is Slot.THINK and self.reasoning_done:
            return self.ids.pad
        return None

    def banned(self) -> frozenset[int]:
        return self._ban_speak if self.next_slot() is Slot.SPEAK else self._ban_think

    def advance(self, token: int) -> Placed:
        slot = self.next_slot()
        forced = self.forced_token()
        if slot in (Slot.SPEAK_CONTROL, Slot.THINK_CONTROL):
            if token != forced:
                raise FormatError(f"position {slot.value} must hold control id {forced}, got {token}")
            placed = Placed(Role.CONTROL, False, self.block)
        else:
            if forced is not None and token != forced:
                raise FormatError("reasoning token after reasoning pads: reasoning must be contiguous")
            if token in self.banned():
                raise FormatError(f"a {slot.value} slot cannot hold id {token} (banned: {sorted(self.banned())})")
            if slot is Slot.THINK and token == self.ids.pad:
                self.reasoning_done = True
            if slot is Slot.SPEAK and token == self.ids.eos:
                self.done = True
            placed = Placed(Role.RESPONSE if slot is Slot.SPEAK else Role.REASONING, True, self.block)
        self.pos_in_block += 1
        if self.pos_in_block == self.schedule.block_len:
            self.pos_in_block = 0
            self.block += 1
        return placed

    def streams(
        self,
        response: Sequence[int],
        reasoning: Sequence[int],
        min_block: Sequence[int] | None = None,
        delay_eos: bool = False,
    ) -> tuple[list[int], list[int]]:
        """Speak stream (response tokens, delaying pads, eos) and think stream (the reasoning).

        ``min_block[i]`` (optional, one per response token) is the earliest block in which response
        token ``i`` may be spoken; earlier speak slots are filled with ``pad``. ``eos`` may only come
        in a block after the last reasoning token: with ``delay_eos=False`` a response that is too
        short raises ``FormatError``; with ``delay_eos=True`` speak-slot pads hold it back.
        """
        s, ids = self.schedule, self.ids
        if min_block is not None and len(min_block) != len(response):
            raise FormatError(f"min_block has {len(min_block)} entries for {len(response)} response tokens")
        need_eos_block = earliest_eos_block(len(reasoning), s)
        mb = list(min_block) if min_block is not None else [0] * len(response)
        # Speak slot j of block b has global speak index b*speak + j; each item goes to the first
        # free slot at or after its earliest block.
        speak: list[int] = []
        for tok, b in list(zip(response, mb)) + [(ids.eos, need_eos_block if delay_eos else 0)]:
            while len(speak) < b * s.speak:
                speak.append(ids.pad)
            speak.append(tok)
        eos_block = (len(speak) - 1) // s.speak
        if eos_block < need_eos_block:
            raise FormatError(
                f"response ends before reasoning: eos falls in block {eos_block} but the {len(reasoning)} "
                f"reasoning tokens fill think slots up to block {need_eos_block - 1} "
                f"(speak={s.speak}, think={s.think}); lengthen the response, shorten the "
                "reasoning, or pass delay_eos=True to hold the response back with pads"
            )
        return speak, list(reasoning)  # think slots past the reasoning hold pads


class ThinkFirstCursor:
    """The baseline grammar: ``<|think|>`` (forced) reasoning ``<|speak|>`` (predicted) response ``eos``."""

    def __init__(self, schedule: Schedule, ids: ControlIds) -> None:
        del schedule  # no interleaving: the schedule does not apply
        self.ids = ids
        self.block = 0
        self.done = False
        self.phase: Literal["start", "reasoning", "response"] = "start"
        self._ban = {
            "reasoning": frozenset((ids.think, ids.pad, ids.eos)),
            "response": frozenset((ids.think, ids.speak, ids.pad)),
        }

    def next_slot(self) -> Slot:
        if self.done:
            raise FormatError("the sequence already ended with eos; start a new cursor")
        return {"start": Slot.THINK_CONTROL, "reasoning": Slot.THINK, "response": Slot.SPEAK}[self.phase]

    def forced_token(self) -> int | None:
        return self.ids.think if self.next_slot() is Slot.THINK_CONTROL else None

    def banned(self) -> frozenset[int]:
        self.next_slot()
        return self._ban.get(self.phase, frozenset())

    def advance(self, token: int) -> Placed:
        slot = self.next_slot()
        if slot is Slot.THINK_CONTROL:
            if token != self.ids.think:
                raise FormatError(f"a think-first sequence starts with control id {self.ids.think}, got {token}")
            self.phase = "reasoning"
            return Placed(Role.CONTROL, False, 0)
        if token in self.banned():
            raise FormatError(f"a think-first {self.phase} position cannot hold id {token}")
        if self.phase == "reasoning":
            if token == self.ids.speak:  # the model ends its reasoning: predicted, so a loss target
                self.phase = "response"
                return Placed(Role.CONTROL, True, 0)
            return Placed(Role.REASONING, True, 0)
        if token == self.ids.eos:
            self.done = True
        return Placed(Role.RESPONSE, True, 0)

    def streams(
        self,
        response: Sequence[int],
        reasoning: Sequence[int],
        min_block: Sequence[int] | None = None,
        delay_eos: bool = False,
    ) -> tuple[list[int], list[int]]:
        """Speak stream ``response + [eos]``, think stream ``reasoning + [<|speak|>]``.

        ``min_block`` and ``delay_eos`` constrain interleaving only; here the whole response follows
        the whole reasoning, so they hold by construction and are accepted for a uniform call.
        """
        del min_block, delay_eos
        return [*response, self.ids.eos], [*reasoning, self.ids.speak]


CURSORS: dict[str, type] = {"tis": TisCursor, "think_first": ThinkFirstCursor}


@dataclass(frozen=True)
class FormatInfo:
    """What code outside the cursors may ask of a format, instead of testing its name.

    ``interleaved``: reasoning and response alternate in blocks, so a speak:think ratio applies (the
    schedule, the ratio sweep, the budget of new tokens scaled by the ratio); ``label``: its name in reports."""

    name: str
    interleaved: bool
    label: str

    @property
    def ratio(self) -> bool:
        """Whether a speak:think ratio describes this format's layout."""
        return self.interleaved


FORMATS: dict[str, FormatInfo] = {"tis": FormatInfo("tis", True, "TiS"),
                                  "think_first": FormatInfo("think_first", False, "think-first")}


def format_info(fmt: str) -> FormatInfo:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise FormatError(f"unknown format {fmt!r}; use one of {sorted(FORMATS)}") from None


def cursor_for(fmt: Format, schedule: Schedule, ids: ControlIds) -> FormatCursor:
    """A fresh cursor for the generated part (after the prompt) of a ``fmt`` sequence."""
    try:
        cls = CURSORS[fmt]
    except KeyError:
        raise FormatError(f"unknown format {fmt!r}; use one of {sorted(CURSORS)}") from None
    return cls(schedule, ids)


def _check_tokens(name: str, tokens: Sequence[int], ids: ControlIds) -> None:
    # A chat prompt legitimately holds eos (it ends the user turn); the streams may not.
    reserved = (ids.speak, ids.think, ids.pad) if name == "prompt" else (ids.speak, ids.think, ids.pad, ids.eos)
    bad = [t for t in tokens if t in reserved]
    if bad:
        raise FormatError(
            f"{name} contains control/pad/eos ids {sorted(set(bad))}; pass plain text token ids "
            "(the format inserts control tokens, pads and eos itself)"
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
    """Lay out prompt, response and reasoning in format ``fmt`` by walking its cursor.

    ``kwargs`` go to the cursor's ``streams`` (TiS: ``min_block``, ``delay_eos``). The loss mask is
    the cursor's ``target``: every generated position except the schedule-inserted controls.
    """
    cursor = cursor_for(fmt, schedule, ids)
    if not response:
        raise FormatError("empty response: a sample needs at least one response token")
    _check_tokens("prompt", prompt, ids)
    _check_tokens("response", response, ids)
    _check_tokens("reasoning", reasoning, ids)
    speak, think = cursor.streams(response, reasoning, **kwargs)
    out_ids, mask, roles = list(prompt), [False] * len(prompt), [Role.PROMPT] * len(prompt)
    si = ti = 0
    while not cursor.done:
        tok = cursor.forced_token()
        if tok is None and cursor.next_slot() is Slot.SPEAK:
            tok, si = speak[si], si + 1
        elif tok is None:
            tok, ti = (think[ti] if ti < len(think) else ids.pad), ti + 1
        placed = cursor.advance(tok)
        out_ids.append(tok)
        roles.append(placed.role)
        mask.append(placed.target)
    return Layout(out_ids, mask, roles, len(prompt), n_blocks=cursor.block + 1)


def interleave(
    prompt: Sequence[int],
    response: Sequence[int],
    reasoning: Sequence[int],
    ids: ControlIds,
    schedule: Schedule = Schedule(),
    min_block: Sequence[int] | None = None,
    delay_eos: bool = False,
) -> Layout:
    """The TiS layout (``build("tis", ...)``); see ``TisCursor.streams`` for ``min_block``/``delay_eos``."""
    return build("tis", prompt, response, reasoning, ids, schedule, min_block=min_block, delay_eos=delay_eos)


def think_first(prompt: Sequence[int], response: Sequence[int], reasoning: Sequence[int], ids: ControlIds) -> Layout:
    """The baseline layout (``build("think_first", ...)``): same tokens, no interleaving."""
    return build("think_first", prompt, response, reasoning, ids)


@dataclass
class Split:
    """A generated sequence split back into its two streams (pads, controls and eos removed)."""

    response: list[int]
    reasoning: list[int]
    ended: bool  # eos was reached


def deinterleave(
    generated: Sequence[int], ids: ControlIds, schedule: Schedule = Schedule(), fmt: Format = "tis"
) -> Split:
    """Inverse of ``build`` on the part after the prompt; works on truncated generations too
    (``ended`` is then False) and stops at ``eos``. An illegal sequence raises ``FormatError``."""
    cursor = cursor_for(fmt, schedule, ids)
    response: list[int] = []
    reasoning: list[int] = []
    for tok in generated:
        role = cursor.advance(tok).role
        if role is Role.RESPONSE and tok not in (ids.pad, ids.eos):
            response.append(tok)
        elif role is Role.REASONING and tok != ids.pad:
            reasoning.append(tok)
        if cursor.done:
            return Split(response, reasoning, True)
    return Split(response, reasoning, False)


def _demo() -> None:
    ids = ControlIds(speak=-1, think=-2, pad=0, eos=-3)
    names = {-1: "<S>", -2: "<T>", 0: "_", -3: "<eos>"}
    for fmt in CURSORS:
        seq = build(fmt, [100, 101], list(range(1, 6)), list(range(11, 25)), ids)
        print(f"{fmt}:", " ".join(names.get(t, str(t)) for t in seq.input_ids))
        print("loss:".ljust(len(fmt) + 1), "".join("x" if m else "." for m in seq.loss_mask))


if __name__ == "__main__":
    _demo()

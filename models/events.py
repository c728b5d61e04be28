"""Events of a streaming session: the one vocabulary evaluation, the service and clients share.

Frozen dataclasses, each with ``type`` and ``to_dict()`` (JSON-safe; audio PCM as base64). No heavy
imports, so a client or a web layer can use them without torch.

    text       TextEvent(delta, position)                 response text, decoded incrementally
    reasoning  ReasoningEvent(delta, position, block)     silent reasoning text
    audio      AudioEvent(pcm16, sample_rate, seq, offset) PCM16 mono little-endian; offset in samples
    done       DoneEvent(response, reasoning, timings, finish_reason, audio_end)
    error      ErrorEvent(message)
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Union


@dataclass(frozen=True)
class TextEvent:
    delta: str
    position: int  # thinker position (after the prompt) of the token that completed the delta
    type: ClassVar[str] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class ReasoningEvent:
    delta: str
    position: int
    block: int  # TiS block of that position (think-first: 0)
    type: ClassVar[str] = "reasoning"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class AudioEvent:
    pcm16: bytes  # mono, little-endian int16
    sample_rate: int
    seq: int  # 0, 1, 2, ... within the session
    offset: int  # samples before this chunk

    type: ClassVar[str] = "audio"

    @property
    def samples(self) -> int:
        return len(self.pcm16) // 2

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "pcm16": base64.b64encode(self.pcm16).decode("ascii"),
                "sample_rate": self.sample_rate, "seq": self.seq, "offset": self.offset}


@dataclass(frozen=True)
class DoneEvent:
    response: str  # equals the concatenated text deltas
    reasoning: str  # equals the concatenated reasoning deltas
    timings: dict[str, Any] = field(default_factory=dict)
    # "eos" (the format's end), "max_new_tokens" (the thinker's cap), or, when the text ended but a cap cut
    # the speech, "max_audio_seconds" (the hard audio cap) or "audio_length" (the response-length bound)
    finish_reason: str = "eos"
    # why the speech ended (None without audio): "eos" (the talker's end code), "silence" (trailing
    # silence after the whole response was read), "audio_length" or "max_audio_seconds" (caps)
    audio_end: str | None = None
    type: ClassVar[str] = "done"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class ErrorEvent:
    message: str
    type: ClassVar[str] = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


Event = Union[TextEvent, ReasoningEvent, AudioEvent, DoneEvent, ErrorEvent]

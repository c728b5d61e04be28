"""Streaming decoding that enforces the schedule: one event per generated token, KV-cached.

Control tokens are forced (never sampled); a think slot may hold a reasoning token or a pad (pads stay
once reasoning is over); a speak slot may hold a response token, a pad or eos. Generation ends at eos
(or ``max_new_tokens``). The state of one request is a small dataclass (`DecodeState`), so a server
keeps one per connection.

    for ev in stream_decode(model.thinker, prompt_ids, control_ids(tok), Schedule()):
        print(ev.stream, tok.decode([ev.token]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

from models.format import ControlIds, Format, Schedule, ScheduleCursor, Slot

Stream = Literal["response", "reasoning", "control"]


@dataclass(frozen=True)
class TokenEvent:
    index: int  # position in the generated part (0 = first token after the prompt)
    token: int
    stream: Stream
    block: int
    forced: bool  # inserted by the schedule, not predicted
    pad: bool
    eos: bool


@dataclass
class DecodeState:
    """Per-request state: the schedule cursor and the model's KV cache."""

    cursor: ScheduleCursor | None
    fmt: Format = "tis"
    cache: object | None = None
    generated: list[int] = field(default_factory=list)
    think_first_stream: Stream = "control"  # think-first: which stream the last control opened


def _banned(slot: Slot | None, ids: ControlIds, fmt: Format, tf_stream: Stream) -> set[int]:
    if fmt == "think_first":
        # <|think|> reasoning <|speak|> response eos: the only control left to predict is <|speak|>.
        return {ids.think, ids.pad} | ({ids.speak} if tf_stream == "response" else {ids.eos})
    if slot is Slot.THINK:
        return {ids.speak, ids.think, ids.eos}
    return {ids.speak, ids.think}  # speak slot: text, pad or eos


def stream_decode(
    thinker,
    prompt_ids: Sequence[int],
    ids: ControlIds,
    schedule: Schedule = Schedule(),
    fmt: Format = "tis",
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    generator=None,
    **prompt_inputs,
) -> Iterator[TokenEvent]:
    """Greedy (``temperature=0``) or sampled decoding under the schedule; yields one event per token.

    ``prompt_inputs``: extra thinker inputs for the prompt pass (``input_features``,
    ``feature_attention_mask`` for a spoken question).
    """
    import torch

    device = next(thinker.parameters()).device
    state = DecodeState(ScheduleCursor(schedule, ids) if fmt == "tis" else None, fmt)
    x = torch.tensor([list(prompt_ids)], device=device)
    thinker.eval()
    with torch.no_grad():
        out = thinker(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True, **prompt_inputs)
        state.cache = out.past_key_values
        logits = out.logits[0, -1]
        for i in range(max_new_tokens):
            if fmt == "tis":
                cur = state.cursor
                slot = cur.next_slot()
                block = cur.block
                forced = cur.forced_token()
                if forced is None and slot is Slot.THINK and cur.reasoning_done:
                    forced_pad = ids.pad  # reasoning is contiguous: once padded, pads to the end
                else:
                    forced_pad = None
            else:
                slot, block, forced_pad = None, 0, None
                forced = ids.think if i == 0 else None
            if forced is not None or forced_pad is not None:
                tok, was_forced = (forced if forced is not None else forced_pad), forced is not None
            else:
                lg = logits.float().clone()
                lg[list(_banned(slot, ids, fmt, state.think_first_stream))] = float("-inf")
                if temperature > 0:
                    probs = torch.softmax(lg / temperature, -1)
                    tok = int(torch.multinomial(probs, 1, generator=generator))
                else:
                    tok = int(lg.argmax())
                was_forced = False
            if fmt == "tis":
                filled = state.cursor.advance(tok)
                stream: Stream = ("control" if filled in (Slot.SPEAK_CONTROL, Slot.THINK_CONTROL)
                                  else "response" if filled is Slot.SPEAK else "reasoning")
                done = state.cursor.done
            else:
                if tok in (ids.think, ids.speak):
                    state.think_first_stream = "reasoning" if tok == ids.think else "response"
                    stream = "control"
                else:
                    stream = state.think_first_stream
                done = tok == ids.eos
            state.generated.append(tok)
            yield TokenEvent(i, tok, stream, block, was_forced, tok == ids.pad, tok == ids.eos)
            if done:
                return
            step = thinker(input_ids=torch.tensor([[tok]], device=device), cache=state.cache,
                           use_cache=True)
            state.cache = step.past_key_values
            logits = step.logits[0, -1]

"""Thinker decoding one position at a time, under a format cursor, over a per-request state.

``prefill`` runs the prompt and returns a :class:`ThinkerState` (this request's KV cache, format
cursor, sampler and next-token logits); each ``step`` places one position and returns its token,
role and the thinker's last hidden state there (what the talker reads). The cursor forces what the
format forces (TiS controls, think-first's leading ``<|think|>``, pads after the reasoning) and bans
what it bans; nothing here knows which format it runs.

Positions are explicit (``arange`` over prompt and generated tokens, the same 1-D positions a
training forward of the whole sequence uses): Qwen2.5-Omni's thinker would otherwise keep
``rope_deltas`` on the module between calls, which two interleaved requests must not share. So a
step touches nothing but its own state.

    state = prefill(model.thinker, prompt_ids, cursor_for("tis", Schedule(), ids), max_new_tokens=256)
    while not state.done:
        out = step(model.thinker, state)   # ThinkerStep(index, token, placed, forced, logits, hidden)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from models.format import FormatCursor, Placed


@dataclass
class ThinkerState:
    """One request's thinker state; advance it only with ``step``."""

    cursor: FormatCursor
    cache: Any  # transformers DynamicCache: this request's keys/values
    prompt_len: int
    max_new_tokens: int
    temperature: float = 0.0
    generator: torch.Generator | None = None
    logits: torch.Tensor | None = None  # (V,) logits for the next position
    generated: list[int] = field(default_factory=list)
    done: bool = False
    _ban_index: dict = field(default_factory=dict, repr=False)  # banned id set -> index tensor


@dataclass(frozen=True)
class ThinkerStep:
    index: int  # position after the prompt (0 = first generated)
    token: int
    placed: Placed  # role, loss-target flag and block, as the cursor placed the token
    forced: bool  # dictated by the format, not chosen from the logits
    logits: torch.Tensor  # (V,) the logits this position was decided from (before the format's masking)
    hidden: torch.Tensor | None  # (H,) last hidden state at this position; None when not computed


def _positions(start: int, n: int, device) -> torch.Tensor:
    # (3, 1, n): Qwen2.5-Omni's multimodal rope takes one row per axis; text and audio use 1-D positions.
    return torch.arange(start, start + n, device=device).view(1, 1, n).expand(3, 1, n)


def choose(logits: torch.Tensor, banned_index: torch.Tensor, temperature: float,
           generator: torch.Generator | None) -> int:
    """Greedy (``temperature == 0``) or sampled token from ``logits`` (V,) with ``banned_index`` ids excluded."""
    scores = logits.float().index_fill(0, banned_index, float("-inf"))
    if temperature <= 0:
        return int(scores.argmax())
    probs = torch.softmax(scores / temperature, -1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def prefill(
    thinker,
    prompt_ids: Sequence[int],
    cursor: FormatCursor,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    **prompt_inputs,
) -> ThinkerState:
    """Run the prompt; returns the state whose first ``step`` places the first generated position.

    ``prompt_inputs``: extra thinker inputs for a spoken prompt (``input_features`` (1, 128, L),
    ``feature_attention_mask`` (1, L)), as the trainer passes them.
    """
    from transformers import DynamicCache

    if not prompt_ids:
        raise ValueError("empty prompt: pass the chat prompt ids (models.tokenizer.text_prompt / models.audio.audio_prompt)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    dev = thinker.lm_head.weight.device
    x = torch.tensor([list(prompt_ids)], device=dev)
    cache = DynamicCache(config=thinker.config.text_config)
    out = thinker.model(input_ids=x, position_ids=_positions(0, x.shape[1], dev), cache=cache, use_cache=True,
                        **prompt_inputs)
    logits = thinker.lm_head(out.last_hidden_state[0, -1])
    return ThinkerState(cursor, cache, x.shape[1], max_new_tokens, temperature, generator, logits)


@torch.inference_mode()
def step(thinker, state: ThinkerState, need_hidden: bool = True) -> ThinkerStep:
    """Place one position: the format's forced token or one chosen from the logits, then run it
    through the thinker (its hidden state for the talker, the logits for the next position).

    ``need_hidden=False`` skips that forward for the last position of a text-only request.
    """
    if state.done:
        raise RuntimeError("this thinker state is done; start a new request with prefill")
    cur, logits = state.cursor, state.logits
    forced = cur.forced_token()
    if forced is None:
        banned = cur.banned()
        idx = state._ban_index.get(banned)
        if idx is None:
            idx = state._ban_index[banned] = torch.tensor(sorted(banned), device=logits.device, dtype=torch.long)
        tok = choose(logits, idx, state.temperature, state.generator)
    else:
        tok = forced
    placed = cur.advance(tok)
    state.generated.append(tok)
    state.done = cur.done or len(state.generated) >= state.max_new_tokens
    hidden = None
    if need_hidden or not state.done:
        dev = logits.device
        pos = state.prompt_len + len(state.generated) - 1
        out = thinker.model(input_ids=torch.tensor([[tok]], device=dev), position_ids=_positions(pos, 1, dev),
                            cache=state.cache, use_cache=True)
        hidden = out.last_hidden_state[0, -1]  # (H,)
    state.logits = None if state.done else thinker.lm_head(hidden)
    return ThinkerStep(len(state.generated) - 1, tok, placed, forced is not None, logits, hidden)

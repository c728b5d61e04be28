"""Thinker decoding one position at a time, under a format cursor, over a per-request state.

``prefill`` runs the prompt into a slot of a ``models.runner.SlotLM`` and returns a
:class:`ThinkerState` (the slot, format cursor, sampling and next-token logits); ``step_batch`` places
one position in each of many states with ONE sampler call and ONE thinker forward over their slots,
and returns per state its token, role and the thinker's last hidden state there (what the talker
reads); ``step`` is a batch of one. The cursor forces what the format forces (TiS controls,
think-first's leading ``<|think|>``, pads after the reasoning) and bans what it bans; nothing here
knows which format it runs.

Positions are explicit (``arange`` over prompt and generated tokens, the same 1-D positions a
training forward of the whole sequence uses; in a slot, position = cache index): Qwen2.5-Omni's
thinker would otherwise keep ``rope_deltas`` on the module between calls, which two interleaved
requests must not share. So a step touches nothing but its own state and its own slot.

    state = prefill(model.thinker, prompt_ids, cursor_for("tis", Schedule(), ids), max_new_tokens=256)
    while not state.done:
        out = step(model.thinker, state)   # ThinkerStep(index, token, placed, forced, logits, hidden)

    lm = runner.thinker                    # many requests: one slot each, one forward per step
    states = [prefill(lm, p, cursor_for(...), max_new_tokens=256) for p in prompts]
    outs = step_batch([s for s in states if not s.done])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from models.format import FormatCursor, Placed
from models.runner import SamplingParams, SlotLM, sample
from models.streams import embed_step


@dataclass
class ThinkerState:
    """One request's thinker state; advance it only with ``step``/``step_batch``."""

    cursor: FormatCursor
    lm: SlotLM  # the runner's thinker: this request's keys/values are its slot ``slot``
    slot: int
    prompt_len: int
    max_new_tokens: int
    temperature: float = 0.0
    generator: torch.Generator | None = None
    logits: torch.Tensor | None = None  # (V,) logits for the next position
    generated: list[int] = field(default_factory=list)
    done: bool = False
    top_k: int = 0
    top_p: float = 1.0
    marker: int = -1  # the last control id placed (models.streams), when the thinker uses stream markers
    _ban_mask: dict = field(default_factory=dict, repr=False)  # banned id set -> (V,) allowed mask

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p, self.generator)

    def allowed(self, banned: frozenset) -> torch.Tensor:
        m = self._ban_mask.get(banned)
        if m is None:
            m = torch.ones(self.logits.shape[-1], dtype=torch.bool, device=self.logits.device)
            if banned:
                m[torch.tensor(sorted(banned), device=m.device)] = False
            self._ban_mask[banned] = m
        return m


@dataclass(frozen=True)
class ThinkerStep:
    index: int  # position after the prompt (0 = first generated)
    token: int
    placed: Placed  # role, loss-target flag and block, as the cursor placed the token
    forced: bool  # dictated by the format, not chosen from the logits
    logits: torch.Tensor  # (V,) the logits this position was decided from (before the format's masking)
    hidden: torch.Tensor | None  # (H,) last hidden state at this position; None when not computed


def choose(logits: torch.Tensor, banned_index: torch.Tensor, temperature: float,
           generator: torch.Generator | None) -> int:
    """Greedy (``temperature == 0``) or sampled token from ``logits`` (V,) with ``banned_index`` ids
    excluded: ``models.runner.sample`` for one row (the sampler every decoding path uses)."""
    allowed = torch.ones_like(logits, dtype=torch.bool).index_fill(0, banned_index.to(logits.device), False)
    return int(sample(logits[None], [SamplingParams(temperature, generator=generator)], allowed[None])[0])


@torch.inference_mode()
def prefill(
    thinker,
    prompt_ids: Sequence[int],
    cursor: FormatCursor,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    top_k: int = 0,
    top_p: float = 1.0,
    slot: int | None = None,
    **prompt_inputs,
) -> ThinkerState:
    """Run the prompt; returns the state whose first ``step`` places the first generated position.

    ``thinker``: a runner's ``SlotLM`` (the prompt goes into ``slot``, or a slot acquired here; the
    caller frees it) or the thinker module itself (a private one-slot runner, for one request).
    ``prompt_inputs``: extra thinker inputs for a spoken prompt (``input_features`` (1, 128, L),
    ``feature_attention_mask`` (1, L)), as the trainer passes them.
    """
    if not prompt_ids:
        raise ValueError("empty prompt: pass the chat prompt ids (models.tokenizer.text_prompt / models.audio.audio_prompt)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    lm = thinker if isinstance(thinker, SlotLM) else SlotLM.for_thinker(thinker, slots=1, max_slots=1)
    if slot is None:
        slot = lm.acquire()
    x = torch.tensor([list(prompt_ids)], device=lm.device)
    hidden = lm.forward([slot], input_ids=x, **prompt_inputs)  # markers of the prompt: the embedding's hook
    logits = lm.logits(hidden[0, -1])
    marker = -1
    if lm.markers:
        marker = next((t for t in reversed(list(prompt_ids)) if t in lm.markers), -1)
    return ThinkerState(cursor, lm, slot, x.shape[1], max_new_tokens, temperature, generator, logits,
                        top_k=top_k, top_p=top_p, marker=marker)


@torch.inference_mode()
def step_batch(states: Sequence[ThinkerState], need_hidden: Sequence[bool] | bool = True) -> list[ThinkerStep]:
    """Place one position in every state: the format's forced token or one chosen from the logits (one
    sampler call for all), then run the placed tokens through the thinker in one forward per runner
    (their hidden states for the talker, the logits for each next position).

    ``need_hidden`` (per state or for all) False skips the forward for a state's last position (a
    text-only request)."""
    if isinstance(need_hidden, bool):
        need_hidden = [need_hidden] * len(states)
    for st in states:
        if st.done:
            raise RuntimeError("this thinker state is done; start a new request with prefill")
    forced = [st.cursor.forced_token() for st in states]
    free = [i for i, f in enumerate(forced) if f is None]
    toks = list(forced)
    if free:
        logits = torch.stack([states[i].logits for i in free])
        allowed = torch.stack([states[i].allowed(states[i].cursor.banned()) for i in free])
        chosen = sample(logits, [states[i].sampling for i in free], allowed).tolist()
        for i, t in zip(free, chosen):
            toks[i] = t
    placed, before = [], []
    for st, tok in zip(states, toks):
        placed.append(st.cursor.advance(tok))
        if st.lm.markers and tok in st.lm.markers:
            st.marker = tok
        before.append(st.logits)
        st.generated.append(tok)
        st.done = st.cursor.done or len(st.generated) >= st.max_new_tokens
    hidden: list[torch.Tensor | None] = [None] * len(states)
    run = [i for i, st in enumerate(states) if need_hidden[i] or not st.done]
    groups: dict[int, list[int]] = {}
    for i in run:
        groups.setdefault(id(states[i].lm), []).append(i)
    for rows in groups.values():
        lm = states[rows[0]].lm
        x = torch.tensor([[toks[i]] for i in rows], device=lm.device)
        if lm.markers:  # one token a step: its stream marker comes from the request's state
            m = torch.tensor([[states[i].marker] for i in rows], device=lm.device)
            h = lm.forward([states[i].slot for i in rows], inputs_embeds=embed_step(lm.embedding, x, m),
                           token_ids=x)[:, -1]
        else:
            h = lm.forward([states[i].slot for i in rows], input_ids=x)[:, -1]  # (B, H)
        lg = lm.logits(h)  # (B, V)
        for r, i in enumerate(rows):
            hidden[i] = h[r]
            states[i].logits = None if states[i].done else lg[r]
    for i, st in enumerate(states):
        if st.done:
            st.logits = None
    return [ThinkerStep(len(st.generated) - 1, toks[i], placed[i], forced[i] is not None, before[i], hidden[i])
            for i, st in enumerate(states)]


def step(thinker, state: ThinkerState, need_hidden: bool = True) -> ThinkerStep:
    """Place one position of one request (``step_batch`` of one). ``thinker``: the thinker module or
    runner the state was prefilled with, or None (the state holds its runner)."""
    if thinker is not None and thinker is not state.lm and getattr(state.lm, "body", None) is not getattr(
            thinker, "model", None):
        raise ValueError("this state was prefilled on another thinker")
    return step_batch([state], [need_hidden])[0]

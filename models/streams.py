"""Stream markers: each thinker input position also carries the embedding of the stream it is in.

A TiS sequence interleaves two streams (``models.format``): the response (after ``<|speak|>``) and the
reasoning (after ``<|think|>``). A column fact of the scratchpad, ``4+8+1=13``, is often cut by a speak
block (``4+8+1= <|speak|> r r <|think|> 13``), and the digits spoken in ``r r`` look like scratchpad digits.
On the pipeline's text-input answers, TiS got such cut facts right 55 % of the time and uncut ones 86 %
(think-first, same facts: 87 / 96 %; ``bench/bench_straddle.py``). With markers on, a position's input is

    embed(token) + embed(last control token at or before it)        (none before the first one)

so every position says which stream it belongs to without attending back to find the last control token.
The markers are the control tokens' own embedding rows: no new weights, nothing new to save, and a real
checkpoint's rows (new, mean-resized) start as a small shift. Which models use them is in their config
(``thinker_config.stream_markers``: the two control ids), so old checkpoints decode as they were trained.

Training and prefill go through the embedding module, whose forward hook (``attach``) adds the markers
from the ids it is given; a decoding step sees one token, so it gets its marker from the request's state
(``embed_step``), the last control id placed so far.
"""

from __future__ import annotations

from typing import Sequence

ATTR = "stream_markers"


def marker_ids(model) -> tuple[int, int] | None:
    """The (speak, think) ids a model's thinker uses as stream markers, or None when it uses none."""
    cfg = getattr(model, "config", None)
    thinker_cfg = getattr(cfg, "thinker_config", cfg)
    ids = getattr(thinker_cfg, ATTR, None)
    return (int(ids[0]), int(ids[1])) if ids else None


def _embedding(thinker):
    return thinker.get_input_embeddings()


def last_control(input_ids, ids: Sequence[int]):
    """(B, T) id of the last control token (any of ``ids``) at or before each position, -1 where none."""
    import torch

    is_ctrl = torch.zeros_like(input_ids, dtype=torch.bool)
    for i in ids:
        is_ctrl |= input_ids == i
    t = input_ids.shape[-1]
    idx = torch.arange(t, device=input_ids.device).expand_as(input_ids)
    last = torch.where(is_ctrl, idx, torch.full_like(idx, -1)).cummax(dim=-1).values  # (B, T)
    return torch.where(last >= 0, input_ids.gather(-1, last.clamp(min=0)), torch.full_like(input_ids, -1))


def _add(weight, embeds, markers):
    import torch

    m = markers >= 0
    if not bool(m.any()):
        return embeds
    # F.embedding, not ``weight[markers]``: the indexing's backward (index_put_ with accumulate) sums the rows'
    # gradients in thread order on CPU, so two trainings of the same model differed from the first step.
    rows = torch.nn.functional.embedding(markers.clamp(min=0), weight)
    return embeds + rows * m[..., None].to(embeds.dtype)


def _hook(module, args, output):
    ids = module._stream_marker_ids
    return _add(module.weight, output, last_control(args[0], ids))


def attach(model) -> bool:
    """Register the markers' hook on the thinker's token embedding when the model's config names marker ids
    (idempotent); returns whether the model uses markers."""
    ids = marker_ids(model)
    if ids is None:
        return False
    emb = _embedding(model.thinker)
    if getattr(emb, "_stream_marker_ids", None) is None:
        emb._stream_marker_ids = ids
        emb.register_forward_hook(_hook)
    return True


def enable(model, speak_id: int, think_id: int) -> None:
    """Turn markers on for ``model`` (its config records the ids, so a saved checkpoint keeps them)."""
    setattr(model.config.thinker_config, ATTR, [int(speak_id), int(think_id)])
    attach(model)


def thinker_marker_ids(thinker) -> tuple[int, int] | None:
    """The marker ids of a thinker module (hook attached), or None."""
    return getattr(_embedding(thinker), "_stream_marker_ids", None)


def embed_step(embedding, input_ids, markers):
    """Input embeddings of decoding steps: ``input_ids`` (B, T) through ``embedding``'s table without its
    hook, plus the marker rows ``markers`` (B, T) (-1: none)."""
    return _add(embedding.weight, token_embeddings(embedding, input_ids), markers)


def token_embeddings(embedding, input_ids):
    """``input_ids`` through ``embedding``'s table without stream markers (what the talker reads of a token,
    the same in training and in a session, whatever the thinker's markers)."""
    import torch

    return torch.nn.functional.embedding(input_ids, embedding.weight)


# --- the stream mask: the reasoning never reads the response --------------------------------------------
# With ``thinker_config.stream_mask`` (the (speak, think) control ids), a position of the reasoning stream
# (at or after a ``<|think|>``, before the next ``<|speak|>``) does not attend to positions of the response
# stream (at or after a ``<|speak|>``, up to the next ``<|think|>``); the response attends to everything
# before it, as without the mask. So the TiS reasoning reads what think-first's reads -- the prompt and the
# reasoning so far -- and a spoken digit never sits between a column fact's operands and its result (the
# cut facts above). Think-first places its whole reasoning before its first ``<|speak|>``: the mask changes
# nothing there. Training passes the mask as a 4-D attention mask (``attention``); decoding keeps each cache
# position's stream in the runner (``models.runner.SlotLM``) and masks the same keys.
MASK_ATTR = "stream_mask"
NO_STREAM, SPEAK, THINK = 0, 1, 2


def mask_ids(model) -> tuple[int, int] | None:
    """The (speak, think) ids of a model's stream mask, or None when its thinker reads everything."""
    cfg = getattr(model, "config", None)
    thinker_cfg = getattr(cfg, "thinker_config", cfg)
    ids = getattr(thinker_cfg, MASK_ATTR, None)
    return (int(ids[0]), int(ids[1])) if ids else None


def enable_mask(model, speak_id: int, think_id: int, clock: bool = False) -> None:
    """Turn the stream mask on for ``model`` (its config records the ids, so a saved checkpoint keeps it), with
    the reasoning's own rope clock when ``clock`` (``stream_clock`` below)."""
    setattr(model.config.thinker_config, MASK_ATTR, [int(speak_id), int(think_id)])
    setattr(model.config.thinker_config, CLOCK_ATTR, bool(clock))


def stream_codes(input_ids, ids: Sequence[int], before=None):
    """(B, T) stream of each position: ``SPEAK`` / ``THINK`` from the last control token at or before it
    (``ids`` = (speak, think)); positions with none in ``input_ids`` take ``before`` (B,) (the stream the
    row was in before these positions; ``NO_STREAM`` when None)."""
    import torch

    last = last_control(input_ids, ids)
    codes = torch.where(last == ids[0], SPEAK, torch.where(last == ids[1], THINK, -1))
    prior = torch.full_like(codes[:, :1], NO_STREAM) if before is None else before.to(codes)[:, None]
    return torch.where(codes < 0, prior.expand_as(codes), codes)


def blocked(query_codes, key_codes):
    """(B, T, K) True where a query of the reasoning stream would read a key of the response stream."""
    return (query_codes[:, :, None] == THINK) & (key_codes[:, None, :] == SPEAK)


def attention(input_ids, attention_mask, ids: Sequence[int], dtype):
    """The thinker's attention mask for a training forward of right-padded rows with the stream mask:
    ``{"full_attention": (B, 1, T, T)}`` additive (0 / most negative): causal, no padded key, and no
    response key for a reasoning query (what ``SlotLM.forward`` masks while decoding)."""
    import torch

    t = input_ids.shape[-1]
    idx = torch.arange(t, device=input_ids.device)
    seen = (idx[None, :] <= idx[:, None])[None] & attention_mask.bool()[:, None, :]  # (B, T, T)
    codes = stream_codes(input_ids, ids)
    seen = seen & ~blocked(codes, codes)
    seen = seen | torch.eye(t, dtype=torch.bool, device=seen.device)[None]  # a padded query still sees itself
    mask = torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill_(~seen, torch.finfo(dtype).min)
    return {"full_attention": mask[:, None]}


# With ``thinker_config.stream_clock`` too, the reasoning stream keeps its own rope clock: a position outside the
# response stream (the prompt, the reasoning, its controls) is numbered by how many such positions came before it,
# so the reasoning's positions run on without the gaps the speak blocks leave; a response position keeps its
# index in the whole sequence (never less than any clock position before it).
CLOCK_ATTR = "stream_clock"


def clock_of(model) -> bool:
    cfg = getattr(model, "config", None)
    thinker_cfg = getattr(cfg, "thinker_config", cfg)
    return bool(getattr(thinker_cfg, CLOCK_ATTR, False))


def clock_positions(codes, index, clock_before):
    """(B, T) positions of new positions whose streams are ``codes`` (B, T), at sequence indices ``index``
    (B, T), in rows that had ``clock_before`` (B,) positions outside the response stream before them; returns
    (positions, clock after)."""
    import torch

    off = (codes != SPEAK).long()
    clock = clock_before.to(off)[:, None] + off.cumsum(-1)
    return torch.where(off.bool(), clock - 1, index), clock[:, -1]


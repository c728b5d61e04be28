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

"""The training losses, beside the model they score (the trainer only steps): each returns the loss
summed over its targets, so the trainer can normalise by the global number of targets whatever the
number of ranks and micro-batches.

    loss_sum = thinker_loss(model, batch)          # next-token CE over labelled thinker positions
    loss_sum = talker_loss_sum(model, batch, codebooks=4)   # talker CE on response speech codes (thinker frozen)
    LOSSES[spec.t.loss](model, batch)

``batch``: ``input_ids``, ``attention_mask``, ``labels`` (IGNORE where no loss), ``roles``
(models.format.Role per position, ROLE_PAD for batch padding), optional ``input_features`` +
``feature_attention_mask`` (spoken prompts), optional ``codes`` (B, N) codec ids padded with IGNORE.
"""

from __future__ import annotations

IGNORE = -100


def audio_kwargs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_features", "feature_attention_mask") if batch.get(k) is not None}


def positions(attention_mask):
    """(3, B, T) rope positions ``0 .. n-1`` over each right-padded row: the 1-D positions streaming
    decoding uses (``models.decode``), and what Qwen2.5-Omni's ``get_rope_index`` computes for text and
    audio prompts, without its per-sample Python loop (measured ~2-4x the forward's time on the tiny model)."""
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    return pos[None].expand(3, *pos.shape)


def thinker_attention(model, batch: dict):
    """The thinker's ``attention_mask`` for a training forward: the padding mask, or with the stream mask
    (``models.streams``) the 4-D one that keeps the reasoning from reading the response."""
    from models.streams import attention, mask_ids

    ids = mask_ids(model)
    if ids is None:
        return batch["attention_mask"]
    return attention(batch["input_ids"], batch["attention_mask"], ids, next(model.thinker.parameters()).dtype)


def thinker_position_ids(model, batch: dict):
    """The thinker's rope positions for a training forward: ``positions``, or with the stream clock
    (``models.streams``) the reasoning on its own clock."""
    import torch

    from models.streams import clock_of, clock_positions, mask_ids, stream_codes

    pos = positions(batch["attention_mask"])
    ids = mask_ids(model)
    if ids is None or not clock_of(model):
        return pos
    index = pos[0]
    clock, _ = clock_positions(stream_codes(batch["input_ids"], ids), index,
                               torch.zeros(index.shape[0], dtype=torch.long, device=index.device))
    return clock[None].expand(3, *clock.shape)


def thinker_loss(model, batch: dict, reduction: str = "sum"):
    """Next-token cross-entropy of the thinker over the labelled positions (labels are not shifted:
    ``labels[t]`` is the token at position t, predicted from position t-1)."""
    import torch

    out = model.thinker(input_ids=batch["input_ids"], attention_mask=thinker_attention(model, batch),
                        position_ids=thinker_position_ids(model, batch), use_cache=False, **audio_kwargs(batch))
    logits = out.logits[:, :-1].float()  # (B, T-1, V)
    tgt = batch["labels"][:, 1:]  # (B, T-1)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                             ignore_index=IGNORE, reduction=reduction)


def talker_loss_sum(model, batch: dict, reduction: str = "sum", *, codebooks: int, prev_dropout: float = 0.0,
                    self_feed: float = 0.0, codebook_sizes=None, state_cache=None):
    """Talker cross-entropy on the response speech codes (``codebooks`` ids per codec frame), given the
    (frozen) thinker's states; while the model trains (never in evaluation) ``prev_dropout`` hides that
    share of previous codec ids and ``self_feed`` feeds that share from the talker's own draws
    (``models.talker.own_previous``, within ``codebook_sizes``). ``state_cache`` (``models.talker.
    ThinkerStateCache``): the frozen thinker's states of rows seen before, read instead of recomputed."""
    from models.talker import talker_loss, thinker_states, token_embeddings

    def states():
        return thinker_states(model, input_ids=batch["input_ids"], attention_mask=thinker_attention(model, batch),
                              position_ids=thinker_position_ids(model, batch), **audio_kwargs(batch))

    if state_cache is not None and state_cache.usable(model, batch):
        hidden = state_cache.hidden(model, batch, lambda: states()[0])
        embeds = token_embeddings(model.thinker.get_input_embeddings(), batch["input_ids"]).detach()
    else:
        hidden, embeds = states()
    codes = [[int(x) for x in row if x != IGNORE] for row in batch["codes"].tolist()]
    bounds = None
    if batch.get("bounds") is not None:  # aligned token end frames (duration pace); a row of -1: none
        bounds = [[int(x) for x in row if x >= 0] or None for row in batch["bounds"].tolist()]
    return talker_loss(model, hidden, embeds, batch["roles"], codes, reduction=reduction, codebooks=codebooks,
                       input_ids=batch["input_ids"], bounds=bounds,
                       prev_dropout=prev_dropout if model.training else 0.0,
                       self_feed=self_feed if model.training else 0.0, codebook_sizes=codebook_sizes)


LOSSES = {"thinker": thinker_loss, "talker": talker_loss_sum}

"""Train and run Qwen2.5-Omni's talker on response speech; it sees only RESPONSE positions.

The talker turns the thinker's stream into codec tokens (``models.codec``). Its inputs are laid out
as ``Qwen2_5OmniForConditionalGeneration.generate`` lays them out, with one change from DESIGN.md:
every thinker position that is not a RESPONSE position (prompt, control tokens, reasoning, think
pads) reaches the talker as the text pad embedding, so nothing but the spoken stream can leak into
speech. Talker position by position (one sample; P prompt positions, N codec tokens)::

    0 .. P-1      pad                               (Qwen: the prompt's hidden + embedding)
    P             emb(text_bos) + codec(pad)
    P+1+k         reply[k] + codec(bos if k == 0 else c[k-1])   -> predicts c[k]  (c[N] = codec eos)

``reply`` walks the thinker positions after the prompt: ``hidden + embedding`` at RESPONSE positions,
the pad embedding elsewhere, then the text-eos embedding, then pads for as long as speech goes on
(the talker reads one thinker position per codec token, as Qwen's does).

    hidden, embeds = thinker_states(model, input_ids=ids, attention_mask=am)   # thinker frozen
    loss = talker_loss(model, hidden, embeds, roles, [codec.flatten(codes)])
    ids = generate_codes(model, hidden[:1], embeds[:1], roles[:1], codebook_sizes=codec.codebook_sizes)
    wave = codec.decode(codec.unflatten(ids, strict=False))

``roles`` is ``models.format.Role`` per thinker position, ``(B, T)``; batch padding is ``ROLE_PAD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from models.format import Role

ROLE_PAD = -1  # batch padding in ``roles``: the position does not exist


@dataclass
class TalkerInputs:
    """Teacher-forced talker batch: feed ``inputs_embeds`` etc. to ``model.talker``; ``labels`` for CE."""

    inputs_embeds: torch.Tensor  # (B, S, H_thinker), before the talker's thinker_to_talker_proj
    attention_mask: torch.Tensor  # (B, S)
    position_ids: torch.Tensor  # (B, S)
    labels: torch.Tensor  # (B, S), -100 where nothing is predicted


def thinker_states(model, **thinker_inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the thinker once; returns ``(last hidden states (B,T,H), token embeddings (B,T,H))``.

    Under ``torch.no_grad`` when no thinker parameter requires grad (the talker stage freezes it).
    """
    thinker = model.thinker
    trainable = any(p.requires_grad for p in thinker.parameters())
    with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
        out = thinker(**thinker_inputs, output_hidden_states=True)
        embeds = thinker.get_input_embeddings()(thinker_inputs["input_ids"])
    return out.hidden_states[-1], embeds


def _roles_tensor(roles, shape: tuple[int, int]) -> torch.Tensor:
    r = torch.as_tensor(
        [[int(x) for x in row] for row in roles] if not torch.is_tensor(roles) else roles, dtype=torch.long
    )
    if r.ndim == 1:
        r = r[None]
    if tuple(r.shape) != shape:
        raise ValueError(f"roles has shape {tuple(r.shape)} but the thinker states are {shape} (B, T)")
    return r


def _special(model, device) -> dict[str, torch.Tensor]:
    """Thinker-embedding rows the layout uses, each ``(H,)``."""
    t = model.talker
    emb = model.thinker.get_input_embeddings()
    ids = torch.tensor([t.text_bos_token, t.text_eos_token, t.text_pad_token], device=device)
    bos, eos, pad = emb(ids).detach()
    return {"text_bos": bos, "text_eos": eos, "text_pad": pad}


def _reply_stream(hidden: torch.Tensor, embeds: torch.Tensor, roles: torch.Tensor, sp) -> tuple[int, torch.Tensor]:
    """One sample -> (prompt length P, reply rows (R, H)) with non-response positions as pad."""
    valid = roles != ROLE_PAD
    h, e, r = hidden[valid], embeds[valid], roles[valid]
    not_prompt = (r != int(Role.PROMPT)).nonzero()
    p = int(not_prompt[0]) if len(not_prompt) else len(r)
    resp = (r[p:] == int(Role.RESPONSE))[:, None]
    if not resp.any():
        raise ValueError(
            "a sample has no RESPONSE positions after its prompt, so the talker has nothing to speak; "
            "pass the roles from models.format (Layout.roles) for the full sequence"
        )
    reply = torch.where(resp, h[p:] + e[p:], sp["text_pad"].to(h.dtype))
    return p, torch.cat([reply, sp["text_eos"][None].to(h.dtype)])


def _check_codec_ids(model, ids: Sequence[int]) -> None:
    limit = model.talker.codec_pad_token  # control ids sit at the top of the talker vocabulary
    if len(ids) and (min(ids) < 0 or max(ids) >= limit):
        raise ValueError(
            f"codec ids must lie in [0, {limit}) (below the talker's control ids), got range "
            f"[{min(ids)}, {max(ids)}]; use a codec with vocab_size <= {limit} or a larger talker_vocab_size"
        )


def build_talker_inputs(
    model,
    hidden: torch.Tensor,
    embeds: torch.Tensor,
    roles,
    codec_ids: Sequence[Sequence[int]],
) -> TalkerInputs:
    """Teacher-forced talker inputs (layout in the module docstring); right-padded over the batch.

    hidden, embeds: ``(B, T, H)`` thinker last hidden states and token embeddings; roles: ``(B, T)``;
    codec_ids: one flat list of codec token ids per sample (``Codec.flatten``), without bos/eos.
    """
    if hidden.shape != embeds.shape or hidden.ndim != 3:
        raise ValueError(f"hidden {tuple(hidden.shape)} and embeds {tuple(embeds.shape)} must both be (B, T, H)")
    b = hidden.shape[0]
    if len(codec_ids) != b:
        raise ValueError(f"got {len(codec_ids)} codec id lists for a batch of {b}")
    r = _roles_tensor(roles, tuple(hidden.shape[:2])).to(hidden.device)
    t = model.talker
    dev = hidden.device
    codec_emb = t.get_input_embeddings()
    sp = _special(model, dev)
    rows, labels = [], []
    for i in range(b):
        ids = [int(x) for x in codec_ids[i]]
        _check_codec_ids(model, ids)
        p, reply = _reply_stream(hidden[i], embeds[i], r[i], sp)
        n = len(ids) + 1  # codec tokens, then the codec eos
        if len(reply) < n:
            reply = torch.cat([reply, sp["text_pad"][None].expand(n - len(reply), -1).to(reply.dtype)])
        prev = torch.tensor([t.codec_bos_token, *ids], device=dev)
        steps = reply[:n] + codec_emb(prev).to(reply.dtype)  # (n, H)
        head = torch.cat(
            [
                sp["text_pad"][None].expand(p, -1),
                (sp["text_bos"] + codec_emb.weight[t.codec_pad_token])[None],
            ]
        ).to(reply.dtype)
        rows.append(torch.cat([head, steps]))
        labels.append(torch.tensor([-100] * (p + 1) + ids + [t.codec_eos_token], device=dev))
    s = max(len(x) for x in rows)
    h = hidden.shape[-1]
    x = hidden.new_zeros(b, s, h)
    mask = torch.zeros(b, s, dtype=torch.long, device=dev)
    lab = torch.full((b, s), -100, dtype=torch.long, device=dev)
    for i, (row, l) in enumerate(zip(rows, labels)):
        x[i, : len(row)] = row
        mask[i, : len(row)] = 1
        lab[i, : len(l)] = l
    pos = torch.arange(s, device=dev)[None].expand(b, -1)
    return TalkerInputs(x, mask, pos, lab)


def talker_forward(model, inputs: TalkerInputs) -> torch.Tensor:
    """Talker logits ``(B, S, V)`` for teacher-forced inputs."""
    out = model.talker(
        inputs_embeds=inputs.inputs_embeds,
        attention_mask=inputs.attention_mask,
        position_ids=inputs.position_ids,  # given, so the talker's own rope/bos bookkeeping is skipped
        use_cache=False,
    )
    return out.logits


def talker_loss(
    model,
    hidden: torch.Tensor,
    embeds: torch.Tensor,
    roles,
    codec_ids: Sequence[Sequence[int]],
) -> torch.Tensor:
    """Mean cross-entropy of the talker on ``codec_ids`` (+ codec eos), given the thinker's states.

    Gradients reach whatever requires grad: freeze the thinker (or pass detached states) to train
    only the talker.
    """
    inputs = build_talker_inputs(model, hidden, embeds, roles, codec_ids)
    logits = talker_forward(model, inputs)
    # Position s predicts labels[s]: the layout already puts each target at its own input step.
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), inputs.labels.reshape(-1), ignore_index=-100
    )


def codebook_mask(
    step: int, vocab: int, pad_id: int, eos_id: int, codebook_sizes: Sequence[int] | None
) -> torch.Tensor:
    """Allowed talker ids at codec step ``step``: the ids of codebook ``step % n``, plus eos at frame
    starts (so generated ids always unflatten); without ``codebook_sizes``, any codec id or eos."""
    allowed = torch.zeros(vocab, dtype=torch.bool)
    if codebook_sizes is None:
        allowed[:pad_id] = True  # codec ids lie below the control ids, which start at codec pad
        allowed[eos_id] = True
        return allowed
    k = step % len(codebook_sizes)
    off = sum(codebook_sizes[:k])
    allowed[off : off + codebook_sizes[k]] = True
    if k == 0:
        allowed[eos_id] = True
    return allowed


@torch.no_grad()
def generate_codes(
    model,
    hidden: torch.Tensor,
    embeds: torch.Tensor,
    roles,
    max_new_tokens: int = 2000,
    codebook_sizes: Sequence[int] | None = None,
    do_sample: bool = False,
    temperature: float = 0.9,
    top_k: int = 40,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Generate codec ids for one sample (``(1, T, H)`` states) until the codec eos (not returned).

    Same layout as training (``build_talker_inputs``), decoded step by step with a KV cache. Pass the
    codec's ``codebook_sizes`` so each step may only emit ids of its codebook (``codebook_mask``).
    """
    if hidden.ndim == 2:
        hidden, embeds = hidden[None], embeds[None]
    if hidden.shape[0] != 1:
        raise ValueError(f"generate_codes takes one sample, got a batch of {hidden.shape[0]}; loop over it")
    t = model.talker
    dev = hidden.device
    r = _roles_tensor(roles, tuple(hidden.shape[:2])).to(dev)
    sp = _special(model, dev)
    p, reply = _reply_stream(hidden[0], embeds[0], r[0], sp)
    codec_emb = t.get_input_embeddings()
    vocab = t.codec_head.out_features
    first = build_talker_inputs(model, hidden, embeds, r, [[]]).inputs_embeds[:, : p + 2]  # prefix + step 0
    out = t(inputs_embeds=first, position_ids=torch.arange(p + 2, device=dev)[None], use_cache=True)
    cache = out.cache
    logits = out.logits[0, -1]
    ids: list[int] = []
    for k in range(max_new_tokens):
        allowed = codebook_mask(k, vocab, t.codec_pad_token, t.codec_eos_token, codebook_sizes).to(dev)
        scores = logits.float().masked_fill(~allowed, float("-inf"))
        if do_sample:
            scores = scores / max(temperature, 1e-5)
            if top_k:
                kth = torch.topk(scores, min(top_k, int(allowed.sum()))).values[-1]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            tok = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=generator))
        else:
            tok = int(scores.argmax())
        if tok == t.codec_eos_token:
            break
        ids.append(tok)
        step = k + 1
        text = reply[step] if step < len(reply) else sp["text_pad"].to(reply.dtype)
        x = (text + codec_emb(torch.tensor([tok], device=dev))[0])[None, None]
        out = t(inputs_embeds=x, position_ids=torch.tensor([[p + 1 + step]], device=dev), cache=cache, use_cache=True)
        cache = out.cache
        logits = out.logits[0, -1]
    return ids

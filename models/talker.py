"""Qwen2.5-Omni's talker on our layout: it reads one thinker position per codec frame and sees only
the response stream. One layout serves training (teacher-forced) and streaming (``TalkerStream``).

The talker turns the thinker's stream into codec ids (``models.codec``; ``n`` ids per frame, one per
codebook). Per sample, with codec ids ``c[0..N-1]`` and ``c[N]`` the codec eos::

    0        emb(text_bos) + codec(pad)                                   (predicts nothing)
    1 + s    text(s) + codec(bos if s == 0 else c[s-1])   -> predicts c[s]
             text(s) = reply[s // n] when s % n == 0 (a frame's first codebook), else the text pad

``reply`` walks the thinker positions from the first RESPONSE position on: ``hidden + embedding`` at
RESPONSE positions, the text pad at every other one (controls, reasoning, think pads), then the
text-eos embedding, then text pads for as long as speech goes on. The prompt and anything before the
first response position never reach the talker, so its codes cannot depend on them.

Pace: one thinker position per codec *frame* (Qwen's talker reads one per codec *token*): a 50 Hz
codec needs 50 thinker positions per second of speech, so a thinker at >= 50 tokens/s keeps up, and
codec frame ``f`` needs only thinker positions up to ``first response + f``.

    hidden, embeds = thinker_states(model, input_ids=ids, attention_mask=am)     # thinker frozen
    loss = talker_loss(model, hidden, embeds, roles, codes, reduction="sum", codebooks=codec.codebooks)
    n_targets = sum(talker_targets(len(c)) for c in codes)                        # normalise by this
    ids = generate_codes(model, hidden[:1], embeds[:1], roles[:1], codebook_sizes=codec.codebook_sizes)

    stream = TalkerStream(model, codec.codebook_sizes)      # streaming, one request
    stream.push(role, hidden, embed)                        # per thinker position, as they come
    while stream.ready(): stream.step()                     # codec ids in stream.codes
    stream.finish()                                         # the thinker ended
    step_batch([a, b, c])                                   # many streams: one talker forward

``roles`` is ``models.format.Role`` per thinker position, ``(B, T)``; batch padding is ``ROLE_PAD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

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


def talker_targets(n_codes: int) -> int:
    """Loss targets of one sample with ``n_codes`` codec ids: every id, then the codec eos."""
    return n_codes + 1


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
    """Thinker-embedding rows the layout uses, each ``(H,)``, plus the talker's head row."""
    t = model.talker
    emb = model.thinker.get_input_embeddings()
    ids = torch.tensor([t.text_bos_token, t.text_eos_token, t.text_pad_token], device=device)
    bos, eos, pad = emb(ids).detach()
    head = bos + t.get_input_embeddings().weight[t.codec_pad_token].detach().to(bos.dtype)
    return {"text_bos": bos, "text_eos": eos, "text_pad": pad, "head": head}


def _check_codebooks(codebooks: int) -> int:
    if not isinstance(codebooks, int) or codebooks < 1:
        raise ValueError(f"codebooks (codec ids per frame, codec.codebooks) must be a positive int, got {codebooks!r}")
    return codebooks


def _reply(hidden: torch.Tensor, embeds: torch.Tensor, roles: torch.Tensor, sp) -> torch.Tensor:
    """One sample ``(T, H)`` -> reply rows ``(R + 1, H)``: from the first RESPONSE position on,
    ``hidden + embedding`` at RESPONSE positions and the text pad elsewhere, then the text eos."""
    valid = roles != ROLE_PAD
    h, e, r = hidden[valid], embeds[valid], roles[valid]
    resp = r == int(Role.RESPONSE)
    if not resp.any():
        raise ValueError(
            "a sample has no RESPONSE positions, so the talker has nothing to speak; "
            "pass the roles from models.format (Layout.roles) for the full sequence"
        )
    start = int(resp.nonzero()[0])
    rows = torch.where(resp[start:, None], h[start:] + e[start:], sp["text_pad"].to(h.dtype))
    return torch.cat([rows, sp["text_eos"][None].to(h.dtype)])


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
    *,
    codebooks: int,
) -> TalkerInputs:
    """Teacher-forced talker inputs (layout in the module docstring); right-padded over the batch.

    hidden, embeds: ``(B, T, H)`` thinker last hidden states and token embeddings; roles: ``(B, T)``;
    codec_ids: one flat list of codec ids per sample (``Codec.flatten``), without bos/eos;
    codebooks: codec ids per frame (``codec.codebooks``): the talker reads one thinker position per frame.
    """
    n = _check_codebooks(codebooks)
    if hidden.shape != embeds.shape or hidden.ndim != 3:
        raise ValueError(f"hidden {tuple(hidden.shape)} and embeds {tuple(embeds.shape)} must both be (B, T, H)")
    b = hidden.shape[0]
    if len(codec_ids) != b:
        raise ValueError(f"got {len(codec_ids)} codec id lists for a batch of {b}")
    dev = hidden.device
    r = _roles_tensor(roles, tuple(hidden.shape[:2])).to(dev)
    t = model.talker
    codec_emb = t.get_input_embeddings()
    sp = _special(model, dev)
    rows, labels = [], []
    for i in range(b):
        ids = [int(x) for x in codec_ids[i]]
        _check_codec_ids(model, ids)
        reply = _reply(hidden[i], embeds[i], r[i], sp)
        steps = len(ids) + 1  # codec ids, then the codec eos
        text = sp["text_pad"].to(reply.dtype).expand(steps, -1).clone()  # (steps, H)
        frame_starts = torch.arange(0, steps, n, device=dev)
        read = frame_starts // n < len(reply)
        text[frame_starts[read]] = reply[frame_starts[read] // n]
        prev = torch.tensor([t.codec_bos_token, *ids], device=dev)
        x = text + codec_emb(prev).to(reply.dtype)  # (steps, H)
        rows.append(torch.cat([sp["head"][None].to(reply.dtype), x]))
        labels.append(torch.tensor([-100, *ids, t.codec_eos_token], device=dev))
    s = max(len(x) for x in rows)
    x = hidden.new_zeros(b, s, hidden.shape[-1])
    mask = torch.zeros(b, s, dtype=torch.long, device=dev)
    lab = torch.full((b, s), -100, dtype=torch.long, device=dev)
    for i, (row, lb) in enumerate(zip(rows, labels)):
        x[i, : len(row)] = row
        mask[i, : len(row)] = 1
        lab[i, : len(lb)] = lb
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
    reduction: Literal["mean", "sum"] = "mean",
    *,
    codebooks: int,
) -> torch.Tensor:
    """Cross-entropy of the talker on ``codec_ids`` (+ the codec eos), given the thinker's states.

    ``reduction="sum"`` sums over the ``sum(talker_targets(len(c)) for c in codec_ids)`` targets (a
    trainer normalises by its global count); ``"mean"`` divides by that count. Gradients reach
    whatever requires grad: freeze the thinker (or pass detached states) to train only the talker.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    inputs = build_talker_inputs(model, hidden, embeds, roles, codec_ids, codebooks=codebooks)
    logits = talker_forward(model, inputs)
    # Position s predicts labels[s]: the layout already puts each target at its own input step.
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), inputs.labels.reshape(-1), ignore_index=-100,
        reduction=reduction,
    )


def codebook_mask(step: int, vocab: int, eos_id: int, codebook_sizes: Sequence[int]) -> torch.Tensor:
    """Allowed talker ids at codec step ``step``: the ids of codebook ``step % n``, plus the codec
    eos at frame starts (so generated ids always unflatten into whole frames)."""
    k = step % len(codebook_sizes)
    off = sum(codebook_sizes[:k])
    allowed = torch.zeros(vocab, dtype=torch.bool)
    allowed[off : off + codebook_sizes[k]] = True
    if k == 0:
        allowed[eos_id] = True
    return allowed


class TalkerStream:
    """One request's talker: its slot in a runner's talker cache (``lm``, ``slot``; a private one-slot
    runner when none is given), the reply positions received so far, the codes made.

    ``push`` one thinker position at a time (as the thinker makes them); ``ready()`` says whether the
    next talker step has its input; ``step()`` makes one codec id (or the codec eos, which ends it).
    ``finish()`` tells it the thinker ended: then every later step is ready. Same layout as
    ``build_talker_inputs``, so its logits equal the teacher-forced ones.
    """

    def __init__(
        self,
        model,
        codebook_sizes: Sequence[int],
        *,
        temperature: float = 0.0,
        top_k: int = 40,
        generator: torch.Generator | None = None,
        max_codes: int | None = None,
        lm=None,
        slot: int | None = None,
    ) -> None:
        from models.runner import SlotLM

        if not codebook_sizes:
            raise ValueError("codebook_sizes is empty; pass codec.codebook_sizes")
        t = model.talker
        self.model = model
        self.n = len(codebook_sizes)
        _check_codec_ids(model, [sum(codebook_sizes) - 1])
        dev = t.codec_head.weight.device
        self.sp = _special(model, dev)
        self.codec_emb = t.get_input_embeddings()
        self.eos_id = t.codec_eos_token
        self.bos_id = t.codec_bos_token
        vocab = t.codec_head.out_features
        # (n, V) allowed ids per codebook position of a frame
        self.allowed = torch.stack([codebook_mask(k, vocab, self.eos_id, codebook_sizes) for k in range(self.n)]).to(dev)
        self.temperature, self.top_k, self.generator = temperature, top_k, generator
        self.max_codes = max_codes
        # This request's keys/values: slot ``slot`` of a runner's talker (``lm``), or a private one-slot runner.
        self.lm = lm if lm is not None else SlotLM.for_talker(t, slots=1, max_slots=1)
        self.slot = self.lm.acquire() if slot is None else slot
        self.reply: list[torch.Tensor] = []  # (H,) rows, one per thinker position from the first response on
        self.started = False  # the first RESPONSE position arrived
        self.thinker_done = False
        self.codes: list[int] = []
        self.steps = 0  # talker forward steps (codec ids + the eos prediction)
        self.logits: torch.Tensor | None = None  # (V,) logits of the last step
        self.done = False
        self.ended_with_eos = False
        # The codec eos is allowed from this frame on (None: not yet; the caller's end rule sets it)
        self.min_frames: int | None = 0

    def push(self, role: Role | int, hidden: torch.Tensor | None = None, embed: torch.Tensor | None = None) -> None:
        """Receive one thinker position: ``hidden`` and ``embed`` ``(H,)`` are read at RESPONSE positions only."""
        if self.thinker_done:
            raise RuntimeError("push after finish(): the thinker already ended")
        if int(role) == int(Role.RESPONSE):
            if hidden is None or embed is None:
                raise ValueError("a RESPONSE position needs the thinker's hidden state and token embedding")
            self.started = True
            self.reply.append(hidden + embed)
        elif self.started:
            self.reply.append(self.sp["text_pad"])

    def finish(self) -> None:
        """The thinker ended: the reply is complete (then the text eos, then pads)."""
        self.thinker_done = True
        if not self.started:  # no response position at all: nothing to speak
            self.done = True

    def stop(self) -> None:
        """End the speech here (the caller's end rule: silence, a length bound); no eos was said."""
        self.done = True

    @property
    def frame(self) -> int:
        """Frame of the next codec id."""
        return len(self.codes) // self.n

    def ready(self) -> bool:
        """Whether the next step has its input (never true once done)."""
        if self.done or not self.started:
            return False
        if len(self.codes) % self.n:
            return True  # inside a frame the talker reads the text pad
        return self.frame < len(self.reply) or self.thinker_done

    def _text(self, s: int) -> torch.Tensor:
        if s % self.n:
            return self.sp["text_pad"]
        f = s // self.n
        if f < len(self.reply):
            return self.reply[f]
        return self.sp["text_eos"] if f == len(self.reply) else self.sp["text_pad"]

    @property
    def sampling(self):
        from models.runner import SamplingParams

        return SamplingParams(max(0.0, self.temperature), self.top_k if self.temperature > 0 else 0,
                              generator=self.generator)

    def _inputs(self) -> torch.Tensor:
        """The next step's input rows ``(T, H)`` (thinker width): the head row goes in with step 0."""
        s = len(self.codes)
        text = self._text(s)
        prev = torch.tensor([self.bos_id if s == 0 else self.codes[-1]], device=text.device)
        x = (text + self.codec_emb(prev)[0].to(text.dtype))[None]  # (1, H)
        if s == 0:
            x = torch.cat([self.sp["head"][None].to(text.dtype), x])
        return x

    def _allowed(self) -> torch.Tensor:
        s = len(self.codes)
        allowed = self.allowed[s % self.n]
        if s % self.n == 0 and (self.min_frames is None or self.frame < self.min_frames):
            allowed = allowed.clone()
            allowed[self.eos_id] = False  # too early to end the speech
        return allowed

    def _accept(self, tok: int) -> int | None:
        self.steps += 1
        if tok == self.eos_id:
            self.done, self.ended_with_eos = True, True
            return None
        self.codes.append(tok)
        if self.max_codes is not None and len(self.codes) >= self.max_codes:
            self.done = True
        return tok

    def step(self) -> int | None:
        """One talker step: returns the codec id it made, or None for the codec eos (or the cap)."""
        return step_batch([self])[0]


@torch.inference_mode()
def step_batch(streams: Sequence[TalkerStream]) -> list[int | None]:
    """One talker step of every stream: one forward per runner and input length (a stream's first step
    carries its head row too), one sampler call for all. Returns per stream the codec id it made, or
    None for the codec eos (or the cap)."""
    from models.runner import sample

    for st in streams:
        if not st.ready():
            raise RuntimeError("talker step not due: wait for the next thinker position (check ready())")
    xs = [st._inputs() for st in streams]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (st, x) in enumerate(zip(streams, xs)):
        groups.setdefault((id(st.lm), len(x)), []).append(i)
    logits: list[torch.Tensor | None] = [None] * len(streams)
    for rows in groups.values():
        lm = streams[rows[0]].lm
        h = lm.forward([streams[i].slot for i in rows], inputs_embeds=torch.stack([xs[i] for i in rows]))[:, -1]
        lg = lm.logits(h)  # (B, V)
        for r, i in enumerate(rows):
            logits[i] = lg[r]
    for st, lg in zip(streams, logits):
        st.logits = lg
    toks = sample(torch.stack(logits), [st.sampling for st in streams], torch.stack([st._allowed() for st in streams]))
    return [st._accept(t) for st, t in zip(streams, toks.tolist())]


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
    """Codec ids for one whole sample (``(1, T, H)`` states) until the codec eos (not returned) or
    ``max_new_tokens`` ids: the whole sequence is pushed before the first talker step."""
    if codebook_sizes is None:
        raise ValueError("pass codebook_sizes=codec.codebook_sizes: the talker reads one thinker position per frame")
    if hidden.ndim == 2:
        hidden, embeds = hidden[None], embeds[None]
    if hidden.shape[0] != 1:
        raise ValueError(f"generate_codes takes one sample, got a batch of {hidden.shape[0]}; loop over it")
    r = _roles_tensor(roles, tuple(hidden.shape[:2]))[0].tolist()
    if int(Role.RESPONSE) not in r:
        raise ValueError("the sample has no RESPONSE positions, so the talker has nothing to speak")
    stream = TalkerStream(model, codebook_sizes, temperature=temperature if do_sample else 0.0, top_k=top_k,
                          generator=generator, max_codes=max_new_tokens)
    for i, role in enumerate(r):
        if role != ROLE_PAD:
            stream.push(role, hidden[0, i], embeds[0, i])
    stream.finish()
    while stream.ready():
        stream.step()
    return stream.codes

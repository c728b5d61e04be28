"""The model runner: the thinker's and the talker's forward passes for many sessions at once, over
slot-indexed KV caches, and the one sampler both of them use.

A ``SlotLM`` is one decoder stack (the thinker's or the talker's) with a preallocated cache
``(layers, slots, kv_heads, capacity, head_dim)`` for keys and one for values. A request holds a slot
(``acquire``) for its whole life; ``forward(slots, ...)`` runs ``T`` new positions of every listed slot
in ONE forward: a slot holding ``n`` positions writes its keys at ``n .. n + T - 1`` and its queries
see the keys ``0 .. own position`` of their own slot only (a per-row mask), with per-row rope positions
equal to the cache index (the 1-D positions ``models.losses.positions`` gives training). ``free(slot)``
zeroes the slot and returns it to the pool; the next request in that row starts from nothing. The rows
in use stay packed at the bottom (a free moves the last one into the hole, as llama.cpp defragments its
cache), so a batch of every active request reads its keys as one view instead of a gather.
Capacity grows (doubling) as the longest slot needs it, up to ``max_len``; the slot count grows up to
``max_slots``.

The model's own modules run the forward (HF's decoder layers and attention; this module supplies
the cache, the 4-D mask and the positions), so what a batch computes is what a batch of one computes,
up to float rounding.

``sample`` is the vectorised sampler: per row temperature (0 = greedy), top-k, top-p and a
``torch.Generator``; a row draws one uniform number from its own generator per sampled token, so a
request's tokens depend on its seed only, never on who else is in the batch.

    runner = Runner(model, slots=16)
    slot = runner.thinker.acquire()
    h = runner.thinker.forward([slot], input_ids=torch.tensor([prompt]))      # (1, T, H) prefill
    h = runner.thinker.forward([s0, s1, s2], input_ids=next_ids[:, None])     # (3, 1, H) one step each
    logits = runner.thinker.logits(h[:, -1])                                  # (3, V)
    tok = sample(logits, [SamplingParams(0.8, top_k=40, generator=g), ...], allowed=mask)
    runner.thinker.free(slot)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Sequence

import torch

log = logging.getLogger(__name__)
DEFAULT_MAX_LEN = 1 << 16  # positions a slot may hold unless max_len says otherwise


class SlotsFull(RuntimeError):
    """Every slot is taken and the pool is at ``max_slots``."""


class _CacheView:
    """What HF attention layers see as the cache during one ``SlotLM.forward``: ``update`` writes the
    new keys/values of the batch's rows into their slots and returns their keys/values ``(B, kvh,
    kv_len, hd)``."""

    def __init__(self, lm: "SlotLM", rows: torch.Tensor, write: torch.Tensor, kv_len: int, span: slice | None):
        self.lm, self.rows, self.write, self.kv_len, self.span = lm, rows, write, kv_len, span

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k, v = self.lm.k[layer_idx], self.lm.v[layer_idx]  # (S, kvh, cap, hd)
        # Advanced indices in dims 0 and 2 around a slice: the indexed view is (B, T, kvh, hd).
        idx = (self.rows[:, None], slice(None), self.write)
        k[idx] = key_states.transpose(1, 2).to(k.dtype)
        v[idx] = value_states.transpose(1, 2).to(v.dtype)
        if self.span is not None:  # the rows are consecutive slots: a view, no gather
            return k[self.span, :, : self.kv_len], v[self.span, :, : self.kv_len]
        return k[self.rows, :, : self.kv_len], v[self.rows, :, : self.kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.kv_len


class SlotLM:
    """One decoder stack over slot-indexed KV caches (see the module docstring).

    ``body``: the HF module that takes ``input_ids``/``inputs_embeds``, ``position_ids`` (3, B, T),
    ``attention_mask`` and ``cache`` and returns ``last_hidden_state``; ``head``: hidden -> logits;
    ``proj``: applied to ``inputs_embeds`` first (the talker's thinker-to-talker projection)."""

    def __init__(self, body, head, config, *, slots: int = 8, max_slots: int = 256, max_len: int | None = None,
                 capacity: int = 128, proj=None, float_logits: bool = False, name: str = "lm",
                 compile: bool | str = False) -> None:
        if compile not in (False, True, "static") and not isinstance(compile, str):
            raise ValueError(f"compile must be False, True, 'static' or a torch.compile mode, got {compile!r}")
        if slots < 1 or max_slots < slots:
            raise ValueError(f"need 1 <= slots <= max_slots, got slots={slots} max_slots={max_slots}")
        types = set(getattr(config, "layer_types", None) or ["full_attention"])
        if types != {"full_attention"}:
            raise ValueError(f"{name}: only full-attention layers are supported, the config has {sorted(types)}")
        attn = getattr(config, "_attn_implementation", None) or "sdpa"
        if attn not in ("sdpa", "eager"):
            raise ValueError(f"{name}: the slot cache needs a 4-D attention mask: attention implementation 'sdpa' "
                             f"or 'eager', not {attn!r} (model.set_attn_implementation('sdpa'))")
        self.body, self.head, self.proj, self.name = body, head, proj, name
        self.markers: tuple[int, int] | None = None  # the thinker's stream markers (for_thinker)
        # The thinker's stream mask (models.streams; for_thinker): each cache position's stream, per row, and
        # the stream each row is in after its last position; a reasoning query never reads a response key.
        self.mask_ids: tuple[int, int] | None = None
        self.kstream: torch.Tensor | None = None  # (slots, capacity) int8, when mask_ids is set
        self.clock = False  # the reasoning's own rope clock (models.streams, stream_clock)
        self._clock: list[int] = [0] * slots  # per physical row: positions outside the response stream so far
        self.embedding = None
        self.float_logits = float_logits
        p = next(head.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.layers = config.num_hidden_layers
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        # A guard, not an allocation (the capacity grows as needed). Not the config's
        # max_position_embeddings: the talker writes 200 positions per second of speech (30 s: 6,002).
        self.max_len = int(max_len or DEFAULT_MAX_LEN)
        self.max_slots = max_slots
        cap = min(capacity, self.max_len)
        shape = (self.layers, slots, self.kv_heads, cap, self.head_dim)
        with torch.inference_mode(False):  # plain tensors even when made inside inference mode (free() runs outside)
            self.k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self.v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._len = [0] * slots  # positions held, per physical row
        # A request's slot is a handle; its cache lives in physical row _row[handle]. The rows in use
        # are always 0 .. in_use - 1 (free() moves the last one into the hole), so a batch of every
        # active request reads its caches as one view, with no gather.
        self._row: dict[int, int] = {}
        self._handles = 0
        self._later: list[int] = []  # slots to free on the next acquire/forward (freed from another thread)
        self._lock = threading.Lock()
        # Decode steps of every row in use (rows 0..B-1, one position each) may run through a
        # StaticDecoder per B: "static" eager, True or a mode string under torch.compile. Its keys span
        # the whole capacity, so compile where capacity == max_len is affordable (a GPU).
        self.compile = compile
        self._static: dict[int, "StaticDecoder"] = {}

    @classmethod
    def for_thinker(cls, thinker, **kw) -> "SlotLM":
        """The thinker: ``thinker.model`` (audio features merge there at prefill) and ``lm_head``.
        ``markers``: the thinker's stream-marker ids (``models.streams``), None when it uses none."""
        from models.streams import thinker_marker_ids

        lm = cls(thinker.model, thinker.lm_head, thinker.config.text_config, name="thinker", **kw)
        lm.markers = thinker_marker_ids(thinker)
        ids = getattr(thinker.config, "stream_mask", None)
        if ids:
            lm.mask_ids = (int(ids[0]), int(ids[1]))
            with torch.inference_mode(False):
                lm.kstream = torch.zeros((lm.slots, lm.capacity), dtype=torch.int8, device=lm.device)
            lm.clock = bool(getattr(thinker.config, "stream_clock", False))
        lm.embedding = thinker.get_input_embeddings()
        return lm

    @classmethod
    def for_talker(cls, talker, **kw) -> "SlotLM":
        """The talker: inputs are thinker-width embeddings through ``thinker_to_talker_proj``; float logits."""
        return cls(talker.model, talker.codec_head, talker.config, proj=talker.thinker_to_talker_proj,
                   float_logits=True, name="talker", **kw)

    # -- slots ------------------------------------------------------------------------------------
    # acquire, free and forward run on one thread (the model thread); free_later from any.
    @property
    def slots(self) -> int:
        """Physical rows allocated (grows up to ``max_slots``)."""
        return len(self._len)

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def in_use(self) -> int:
        return len(self._row)

    def row(self, slot: int) -> int:
        """The physical cache row of ``slot`` now (it moves when a lower row is freed)."""
        if slot not in self._row:
            raise ValueError(f"{self.name}: slot {slot} is not acquired")
        return self._row[slot]

    def length(self, slot: int) -> int:
        """Positions ``slot`` holds."""
        return self._len[self.row(slot)]

    def acquire(self) -> int:
        """A new slot (empty), in the lowest free row; grows the pool when every row is taken. Raises
        ``SlotsFull`` at ``max_slots``."""
        self.reclaim()
        with self._lock:
            if self.in_use >= self.slots:
                if self.slots >= self.max_slots:
                    raise SlotsFull(f"{self.name}: all {self.slots} slots are in use (max_slots); close finished "
                                    "sessions or raise max_slots")
                self._grow(slots=min(self.max_slots, 2 * self.slots))
            h = self._handles
            self._handles += 1
            self._row[h] = self.in_use
            return h

    def free(self, slot: int) -> None:
        """Zero ``slot``'s row and return it to the pool (idempotent); the last row in use moves into
        the hole, so the rows in use stay 0 .. in_use - 1."""
        with self._lock:
            if slot not in self._row:
                if not 0 <= slot < self._handles:
                    raise ValueError(f"{self.name}: no slot {slot} was ever acquired")
                return
            r = self._row.pop(slot)
            last = self.in_use  # the highest row in use before this free
            with torch.no_grad():
                if r != last:
                    n = self._len[last]
                    moved = next(h for h, x in self._row.items() if x == last)
                    self.k[:, r, :, :n] = self.k[:, last, :, :n]
                    self.v[:, r, :, :n] = self.v[:, last, :, :n]
                    if self.kstream is not None:
                        self.kstream[r, :n] = self.kstream[last, :n]
                    self._clock[r] = self._clock[last]
                    self._zero(r, n)  # what the freed request held past the moved one's length
                    self._row[moved], self._len[r] = r, n
                    r = last
                self._zero(r, 0)
                self._len[r] = 0
                self._clock[r] = 0

    def _zero(self, r: int, keep: int) -> None:  # zero row r from position keep on (what it held)
        n = self._len[r]
        if n > keep:
            self.k[:, r, :, keep:n].zero_()
            self.v[:, r, :, keep:n].zero_()

    def reclaim(self) -> None:
        """Free the slots ``free_later`` queued (on the thread that runs the forwards)."""
        while self._later:
            self.free(self._later.pop())

    def free_later(self, slot: int) -> None:
        """Free ``slot`` at the next ``acquire``/``forward`` (safe from any thread, e.g. a garbage
        collector's finalizer, while another thread runs a forward)."""
        self._later.append(slot)

    def _grow(self, *, slots: int | None = None, capacity: int | None = None) -> None:
        s, cap = slots or self.slots, capacity or self.capacity
        with torch.inference_mode(False), torch.no_grad():  # plain tensors: free() may run outside inference mode
            self._realloc(s, cap)

    def _realloc(self, s: int, cap: int) -> None:
        self._static.clear()  # they hold the old buffers
        k = torch.zeros((self.layers, s, self.kv_heads, cap, self.head_dim), dtype=self.dtype, device=self.device)
        v = torch.zeros_like(k)
        k[:, : self.slots, :, : self.capacity] = self.k
        v[:, : self.slots, :, : self.capacity] = self.v
        if self.kstream is not None:
            ks = torch.zeros((s, cap), dtype=torch.int8, device=self.device)
            ks[: self.slots, : self.capacity] = self.kstream
            self.kstream = ks
        self._clock += [0] * (s - self.slots)
        self._len += [0] * (s - self.slots)
        self.k, self.v = k, v

    # -- forward ----------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, slots: Sequence[int], *, input_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, token_ids: torch.Tensor | None = None,
                **extra) -> torch.Tensor:
        """Run ``T`` new positions of each listed slot in one forward; returns the last hidden states
        ``(B, T, H)``. ``input_ids`` (B, T) or ``inputs_embeds`` (B, T, H_in); ``token_ids`` (B, T): the
        tokens of ``inputs_embeds`` (a thinker with the stream mask needs them); ``extra``: more body
        inputs (the thinker's ``input_features`` at prefill)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if self.mask_ids is not None and input_ids is None and token_ids is None:
            raise ValueError(f"{self.name}: the stream mask needs the token ids of the positions (token_ids=)")
        self.reclaim()
        x = input_ids if input_ids is not None else inputs_embeds
        b, t = x.shape[:2]
        slots = [int(s) for s in slots]
        if len(slots) != b:
            raise ValueError(f"{len(slots)} slots for a batch of {b} rows")
        if len(set(slots)) != b:
            raise ValueError(f"a slot may appear once per forward, got {slots}")
        rows = [self.row(s) for s in slots]
        # Rows in physical order: a batch of consecutive rows (every active request) is a view.
        order = sorted(range(b), key=rows.__getitem__)
        if order != list(range(b)):
            if extra:
                raise ValueError("prefill (with extra inputs) one slot at a time")
            perm = torch.tensor(order, device=x.device)
            x, rows = x[perm], [rows[i] for i in order]
            if token_ids is not None:
                token_ids = token_ids[perm]
            if input_ids is not None:
                input_ids = x
            else:
                inputs_embeds = x
        starts = [self._len[r] for r in rows]
        kv_len = max(starts) + t
        if kv_len > self.max_len:
            raise ValueError(f"{self.name}: a slot would hold {kv_len} positions, more than max_len={self.max_len}")
        if kv_len > self.capacity:
            cap = self.capacity
            while cap < kv_len:
                cap *= 2
            self._grow(capacity=min(cap, self.max_len))
        dev = self.device
        pos = torch.tensor(starts, device=dev)[:, None] + torch.arange(t, device=dev)  # (B, T)
        if (self.compile and self.mask_ids is None and t == 1 and not extra and rows == list(range(b))
                and max(starts) < self.capacity):
            h = self._static_step(slots, order, input_ids, inputs_embeds)
            if h is not None:
                return h
        # (B, 1, T, kv_len): a query sees its own slot's keys up to its own position, nothing else.
        # Additive (0 / most negative), which both the sdpa and the eager attention take.
        seen = (torch.arange(kv_len, device=dev)[None, None, :] <= pos[:, :, None])[:, None]
        rope = pos
        if self.mask_ids is not None:
            block, rope = self._streams(rows, starts, input_ids if input_ids is not None else token_ids, kv_len, pos)
            seen = seen & ~block[:, None]
        mask = torch.zeros(seen.shape, dtype=self.dtype, device=dev).masked_fill_(~seen, torch.finfo(self.dtype).min)
        span = slice(rows[0], rows[0] + b) if rows == list(range(rows[0], rows[0] + b)) else None
        cache = _CacheView(self, torch.tensor(rows, device=dev), pos, kv_len, span)
        if inputs_embeds is not None and self.proj is not None:
            inputs_embeds = self.proj(inputs_embeds)
        out = self.body(input_ids=input_ids, inputs_embeds=inputs_embeds, position_ids=rope[None].expand(3, b, t),
                        attention_mask={"full_attention": mask}, cache=cache, use_cache=True, **extra)
        for r in rows:
            self._len[r] += t
        h = out.last_hidden_state
        if order != list(range(b)):
            h = h[torch.tensor(order, device=h.device).argsort()]  # back to the caller's order
        return h

    def _streams(self, rows: list[int], starts: list[int], ids: torch.Tensor, kv_len: int,
                 pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stream mask (``models.streams``) for new positions at cache indices ``pos`` (B, T): (B, T, kv_len)
        keys of the response stream that those of the reasoning stream may not read, and their rope positions
        (``pos``, or the reasoning's own clock); records the new positions' streams in their rows."""
        from models.streams import NO_STREAM, blocked, clock_positions, stream_codes

        before = torch.tensor([int(self.kstream[r, s - 1]) if s else NO_STREAM for r, s in zip(rows, starts)],
                              device=ids.device)
        codes = stream_codes(ids, self.mask_ids, before)  # (B, T)
        t = ids.shape[1]
        for i, (r, s) in enumerate(zip(rows, starts)):
            self.kstream[r, s:s + t] = codes[i].to(torch.int8)
        keys = self.kstream[torch.tensor(rows, device=self.device), :kv_len].long()  # (B, kv_len)
        rope = pos
        if self.clock:
            before = torch.tensor([self._clock[r] for r in rows], device=pos.device)
            rope, after = clock_positions(codes.to(pos.device), pos, before)
            for r, c in zip(rows, after.tolist()):
                self._clock[r] = int(c)
        return blocked(codes.to(keys.device), keys), rope

    def _static_step(self, slots, order, input_ids, inputs_embeds) -> torch.Tensor | None:
        """The decode step through this batch size's StaticDecoder; None (and eager from now on) when
        it cannot run here (e.g. torch.compile without a working compiler)."""
        b = len(slots)
        sorted_slots = [slots[i] for i in order]
        # One graph per bucket of batch sizes (1, 2, 4, ...), as vLLM captures CUDA graphs: a batch of b
        # runs padded to the bucket, when the pad rows exist and have room for one more position.
        bucket = 1 << (b - 1).bit_length()
        if bucket > self.slots or any(self._len[r] >= self.capacity for r in range(b, bucket)):
            bucket = b
        try:
            dec = self._static.get(bucket)
            if dec is None:
                dec = self._static[bucket] = StaticDecoder(self, bucket,
                                                           compile=False if self.compile == "static" else self.compile)
            h = dec(sorted_slots, input_ids=input_ids, inputs_embeds=inputs_embeds)
        except Exception as e:  # noqa: BLE001 - any compile failure: the eager path is the reference
            log.warning("%s: compiled decode failed (%s: %s); decoding eagerly from now on", self.name,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.compile, self._static = False, {}
            return None
        if order != list(range(b)):
            h = h[torch.tensor(order, device=h.device).argsort()]
        return h

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.head(hidden)
        return out.float() if self.float_logits else out


class Runner:
    """The thinker's and the talker's ``SlotLM`` for one model (the talker's only when the model has one)."""

    def __init__(self, model, *, slots: int = 16, max_slots: int = 256, thinker_max_len: int | None = None,
                 talker_max_len: int | None = None, compile: bool | str = False, capacity: int = 128) -> None:
        self.model = model
        kw = dict(slots=slots, max_slots=max_slots, compile=compile, capacity=capacity)
        self.thinker = SlotLM.for_thinker(model.thinker, max_len=thinker_max_len, **kw)
        talker = getattr(model, "talker", None)
        self.talker = None if talker is None else SlotLM.for_talker(talker, max_len=talker_max_len, **kw)


@dataclass(frozen=True)
class SamplingParams:
    """One row's sampling: ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1.0 are off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample(logits: torch.Tensor, params: Sequence[SamplingParams], allowed: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of ``logits`` (B, V) -> (B,) long. ``allowed`` (B, V) bool: ids a row may
    take (the format's bans, the codebook's ids). Greedy rows take the argmax; sampled rows keep the
    ``top_k`` most probable ids, then the smallest set whose probability reaches ``top_p``, and draw
    by inverse CDF with one uniform number from their own generator."""
    if logits.ndim != 2 or logits.shape[0] != len(params):
        raise ValueError(f"logits {tuple(logits.shape)} must be (B, V) with B = {len(params)} rows of params")
    scores = logits.float()
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.argmax(-1)
    rows = [i for i, p in enumerate(params) if p.temperature > 0]
    if not rows:
        return out
    dev, v = scores.device, scores.shape[-1]
    ps = [params[i] for i in rows]
    temp = torch.tensor([p.temperature for p in ps], device=dev)
    x = scores[rows] / temp[:, None]
    kmax = max(min(p.top_k, v) if p.top_k else v for p in ps)
    lse = torch.logsumexp(x, -1, keepdim=True)  # probabilities over every id, before the top-k cut
    if kmax < v:  # only the kmax best ids can be drawn: sort those, not the vocabulary
        s, order = x.topk(kmax, dim=-1)  # (R, kmax), descending
    else:
        s, order = x.sort(dim=-1, descending=True, stable=True)  # (R, V)
    probs = (s - lse).exp()
    k = torch.tensor([p.top_k or v for p in ps], device=dev)
    keep = torch.arange(s.shape[-1], device=dev)[None] < k[:, None]
    top_p = torch.tensor([p.top_p for p in ps], device=dev)
    keep &= (probs.cumsum(-1) - probs) < top_p[:, None]  # the first id always stays
    cdf = (probs * keep).cumsum(-1)
    u = torch.stack([torch.rand((), generator=p.generator, device=p.generator.device if p.generator else "cpu")
                     .to(dev) for p in ps])
    j = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=s.shape[-1] - 1)
    out[rows] = order.gather(1, j)[:, 0]
    return out


class StaticDecoder(torch.nn.Module):
    """One decode position for rows ``0 .. batch - 1`` of a ``SlotLM`` with static shapes (keys over
    the whole capacity, masked per row), written over the model's own modules without HF's forward
    wrappers, so ``torch.compile`` (``mode="reduce-overhead"``: CUDA graphs) can take it whole. The
    eager ``SlotLM.forward`` is the reference; ``tests/test_runner.py`` holds this to it.

    The slot's rows must be ``0 .. batch - 1`` (``SlotLM`` keeps the rows in use packed at the bottom)
    and the capacity must not change (make the ``SlotLM`` with ``capacity=max_len``).

        dec = StaticDecoder(lm, batch=16, compile="reduce-overhead")
        hidden = dec(slots, input_ids=ids[:, None])   # (B, 1, H), as lm.forward(slots, input_ids=...)
    """

    def __init__(self, lm: SlotLM, batch: int, compile: str | bool = False) -> None:
        super().__init__()
        self.lm, self.batch = lm, batch
        text = getattr(lm.body, "language_model", lm.body)  # the thinker's text model; the talker's is itself
        self.layers, self.norm, self.rope = text.layers, text.norm, text.rotary_emb
        self.embed = text.get_input_embeddings()
        self.register_buffer("k", lm.k, persistent=False)  # static addresses for CUDA graphs
        self.register_buffer("v", lm.v, persistent=False)
        self._step = self._forward
        if compile:
            import torch._dynamo

            mode = compile if isinstance(compile, str) else None
            # Every batch size (bucket) and stack compiles the same code once: room for all of them.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
            self._step = torch.compile(self._forward, mode=mode, dynamic=False, fullgraph=True)

    @staticmethod
    def _rotate(x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    def _forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, H) inputs (after the talker's projection), pos: (B,) positions -> (B, 1, H)."""
        b, cap = x.shape[0], self.k.shape[3]
        # 1-D positions: every mrope section reads the same row, so this is plain rope.
        freqs = pos[:, None].float() * self.rope.inv_freq.float()[None]  # (B, hd/2)
        emb = torch.cat((freqs, freqs), -1)[:, None, None, :]  # (B, 1, 1, hd)
        cos = (emb.cos() * self.rope.attention_scaling).to(x.dtype)
        sin = (emb.sin() * self.rope.attention_scaling).to(x.dtype)
        mask = torch.arange(cap, device=x.device)[None, None, None, :] <= pos[:, None, None, None]  # (B,1,1,cap)
        rows = torch.arange(b, device=x.device)
        h = x
        for i, layer in enumerate(self.layers):
            a = layer.self_attn
            y = layer.input_layernorm(h)
            q = a.q_proj(y).view(b, 1, -1, a.head_dim).transpose(1, 2)  # (B, heads, 1, hd)
            k = a.k_proj(y).view(b, 1, -1, a.head_dim).transpose(1, 2)  # (B, kv_heads, 1, hd)
            v = a.v_proj(y).view(b, 1, -1, a.head_dim).transpose(1, 2)
            q = q * cos + self._rotate(q) * sin
            k = k * cos + self._rotate(k) * sin
            kc, vc = self.k[i, :b], self.v[i, :b]  # (B, kv_heads, cap, hd) views of the cache
            kc[rows, :, pos] = k[:, :, 0].to(kc.dtype)
            vc[rows, :, pos] = v[:, :, 0].to(vc.dtype)
            o = torch.nn.functional.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, scale=a.scaling,
                                                                 enable_gqa=q.shape[1] != kc.shape[1])
            h = h + a.o_proj(o.transpose(1, 2).reshape(b, 1, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.norm(h)

    @torch.no_grad()
    def forward(self, slots: Sequence[int], *, input_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        lm = self.lm
        if lm.k is not self.k:
            raise RuntimeError(f"{lm.name}: the cache was reallocated (capacity or slots grew); make the "
                               "SlotLM with capacity=max_len and enough slots before the StaticDecoder")
        b = len(slots)
        rows = [lm.row(s) for s in slots]
        if b > self.batch or rows != list(range(b)):
            raise ValueError(f"a StaticDecoder steps rows 0..b-1 in order (b <= {self.batch}), got rows {rows}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        # Rows b..batch-1 are padding: they compute a position nobody reads (each writes a key at its
        # own next position, which its owner overwrites before it can see it) and do not advance.
        starts = [lm._len[r] for r in range(self.batch)]
        if max(starts) >= lm.capacity:
            raise ValueError(f"{lm.name}: a slot is full ({lm.capacity} positions)")
        x = self.embed(input_ids) if input_ids is not None else inputs_embeds
        if inputs_embeds is not None and lm.proj is not None:
            x = lm.proj(x)
        if b < self.batch:
            x = torch.cat([x, x.new_zeros(self.batch - b, *x.shape[1:])])
        pos = torch.tensor(starts, device=lm.device)
        h = self._step(x, pos)[:b].clone()  # a copy: CUDA graphs reuse their output buffers
        for r in rows:
            lm._len[r] += 1
        return h

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

import weakref
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from models.format import Role
from models.streams import token_embeddings
from models.saying import (PAUSE_SECONDS, SECONDS_PER_DIGIT, SECONDS_PER_LETTER, SaidDurations,  # noqa: F401
                           number_runs, number_seconds, said_durations, said_seconds, speaking_seconds,
                           spoken_spans)

ROLE_PAD = -1  # batch padding in ``roles``: the position does not exist


# --- pace: which thinker row the talker reads at each codec frame -----------------------------------
# "position": one thinker position per frame, from the first response position on (Qwen's pace, one
#   per frame): the talker must learn for itself which of the rows it has read it is saying now.
# "duration": each spoken response token is read for as many frames as it takes to say (its estimated
#   seconds, ``token_seconds``), moved along a fixed direction by how far through it the frame is
#   (``_progress``); pads, eos, reasoning and controls are skipped, so a response delayed by pads (the
#   drift rule) or laid out at another speak:think ratio is said the same way. The talker only renders:
#   it no longer has to learn the alignment. Training spreads a sample's frames over its tokens in
#   proportion to their estimates; streaming uses ``frames_per_second`` (frames per estimated second,
#   measured on the training speech by the talker stage), so frame f needs only the token said at f.
#   With ``numbers`` (talker.numbers: words) a number in digits is held for as long as its words take to
#   say, shared among its tokens (models/saying.py ``SaidDurations``), known once the number has ended.
#   With ``learned`` seconds (talker.seconds: learned) each token's seconds are measured on the training
#   speech (``learn_seconds``) instead of estimated from its letters.
PACES = ("position", "duration")
# How long a text takes to say: models/saying.py (shared with the synthesize stage's alignment).


_VOCAB_TEXTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_texts(tokenizer) -> list[str | None]:
    """Each token id's text, ``None`` for special tokens (they say nothing and do not break a number).

    Decoded once per tokenizer and vocabulary size (a real checkpoint's ~150k ids take seconds, and the
    talker stage asks for them several times); callers get their own copy of the list."""
    try:
        hit = _VOCAB_TEXTS.get(tokenizer)
    except TypeError:  # not weak-referenceable: decode every time
        hit = None
    if hit is None or len(hit) != len(tokenizer):
        special = set(tokenizer.all_special_ids)
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        hit = [None if i in special else t for i, t in enumerate(texts)]
        try:
            _VOCAB_TEXTS[tokenizer] = hit
        except TypeError:
            pass
    return list(hit)


def token_seconds(tokenizer) -> torch.Tensor:
    """``(V,)`` estimated seconds to say each token id alone (letters, digits, then punctuation pauses);
    0 for special tokens and tokens that say nothing (a space): the talker skips those."""
    return torch.tensor([0.0 if t is None else said_seconds(t) for t in token_texts(tokenizer)])


def learn_seconds(responses, texts: Sequence[str | None], seconds: torch.Tensor, prior: float = 3.0) -> dict:
    """Seconds each token takes to say, measured on aligned speech: ``responses`` yields ``(ids, starts,
    total)`` per response (its token ids, each token's start second in its speech, ``response_starts`` of
    the synthesize stage, and the speech's length); ``texts`` / ``seconds`` are every id's text
    (``token_texts``) and estimated seconds (``token_seconds``).

    A spoken token (estimate > 0) lasts from its start to the next spoken token's start (the last: to the
    end). Per token id outside numbers: the mean of its measured seconds, shrunk towards its estimate times
    ``ratio`` (all measured / all estimated seconds) with the weight of ``prior`` occurrences, so a rare
    token keeps about its estimate. A number in digits is said as words (``number_seconds``):
    ``number_scale`` is its measured / estimated seconds over every number. Returns ``{"ratio",
    "number_scale", "seconds": {id: seconds}, "responses", "tokens"}`` (JSON-ready: ``set_pace(learned=)``)."""
    from collections import defaultdict

    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    measured = estimated = number_measured = number_estimated = 0.0
    n = tokens = 0
    for ids, starts, total in responses:
        ids = [int(i) for i in ids]
        total = float(total or 0.0)
        if not starts or len(starts) != len(ids) or total <= 0:
            continue
        spans = spoken_spans(starts, [0 <= i < len(seconds) and float(seconds[i]) > 0 for i in ids], total)
        if not spans:
            continue
        n += 1
        dur = {k: end - start for k, start, end in spans}
        tt = [texts[i] if 0 <= i < len(texts) else None for i in ids]
        in_number: set[int] = set()
        for run in number_runs(tt):
            in_number.update(run)
            try:
                number_estimated += number_seconds("".join(tt[k] for k in run))
            except ValueError:  # "1.2.3": said digit by digit, not a number's words
                continue
            number_measured += sum(dur.get(k, 0.0) for k in run)
        for k in dur:
            if k not in in_number:
                sums[ids[k]] += dur[k]
                counts[ids[k]] += 1
                measured += dur[k]
                estimated += float(seconds[ids[k]])
                tokens += 1
    if not n or measured <= 0 or estimated <= 0:
        raise ValueError("no response with aligned timing (response_starts) to learn token seconds from: "
                         "talker.seconds: learned needs the synthesize stage's espeak word times; set "
                         "talker.seconds: estimate")
    ratio = measured / estimated
    number_scale = number_measured / number_estimated if number_measured > 0 and number_estimated > 0 else ratio
    table = {i: (sums[i] + prior * float(seconds[i]) * ratio) / (counts[i] + prior) for i in sorted(sums)}
    return {"ratio": round(ratio, 6), "number_scale": round(number_scale, 6),
            "seconds": {str(i): round(v, 6) for i, v in table.items()}, "responses": n, "tokens": tokens}


def learned_seconds(estimate: torch.Tensor, learned: dict) -> tuple[torch.Tensor, float]:
    """``(V,)`` seconds per token id from a ``learn_seconds`` result (ids it did not see: the estimate times
    its ``ratio``; tokens that say nothing stay 0) and its ``number_scale``."""
    try:
        ratio, number_scale = float(learned["ratio"]), float(learned["number_scale"])
        table = {int(i): float(v) for i, v in learned["seconds"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"learned token seconds must be a learn_seconds() result ({{'ratio', 'number_scale', "
                         f"'seconds'}}); got {type(learned).__name__}: {e}") from e
    if not (ratio > 0 and number_scale > 0) or any(not v >= 0 for v in table.values()):
        raise ValueError(f"learned token seconds need ratio and number_scale > 0 and seconds >= 0 "
                         f"(got ratio {ratio}, number_scale {number_scale})")
    out = estimate.float() * ratio
    for i, v in table.items():
        if 0 <= i < len(out) and float(estimate[i]) > 0:
            out[i] = v
    return out, number_scale


@dataclass
class Pace:
    """A talker's pace (see PACES): ``seconds`` ``(V,)`` per token id (``token_seconds``) and the
    measured ``frames_per_second`` (codec frames per estimated second) for the duration pace; with
    ``numbers``, each token's ``texts`` (``token_texts``) so that a number's tokens share its words' time
    (times ``number_scale``: measured / estimated seconds of a number, ``learn_seconds``)."""

    kind: str
    seconds: torch.Tensor | None = None
    frames_per_second: float | None = None
    numbers: bool = False
    texts: Sequence[str | None] | None = None
    number_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in PACES:
            raise ValueError(f"talker pace must be one of {PACES}, got {self.kind!r}; set talker.pace in params.yaml")
        if self.kind == "duration" and (self.seconds is None or not self.frames_per_second
                                        or self.frames_per_second <= 0):
            raise ValueError("the duration pace needs token seconds and a positive frames_per_second "
                             f"(got {self.frames_per_second!r}); the talker stage measures it on its training speech")
        if self.numbers and (self.texts is None or self.seconds is None or len(self.texts) != len(self.seconds)):
            raise ValueError("a pace that says numbers as words needs each token's text (models.talker.token_texts)")

    @property
    def by_duration(self) -> bool:
        return self.kind == "duration"

    def text(self, token: int) -> str | None:
        """Token ``token``'s text as ``SaidDurations`` reads it (``None``: a special token or none at all)."""
        return self.texts[token] if self.texts is not None and 0 <= token < len(self.texts) else None

    def durations(self, ids: Sequence[int]) -> torch.Tensor:
        """``(K,)`` seconds of each of a response's tokens ``ids`` (in order; 0 for those that say nothing):
        ``seconds`` per id, or with ``numbers`` a number's tokens sharing its words' time."""
        own = torch.tensor([self.own(int(i)) for i in ids], dtype=torch.float32)
        if not self.numbers:
            return own
        return torch.tensor(said_durations([self.text(int(i)) for i in ids], seconds=own.tolist(),
                                           number_scale=self.number_scale), dtype=torch.float32)

    def own(self, token: int) -> float:
        """Token ``token``'s own seconds (0 for an id outside the table)."""
        return float(self.seconds[token]) if self.seconds is not None and 0 <= token < len(self.seconds) else 0.0


def pace_of(model) -> Pace:
    """The pace a model's talker reads at (``set_pace`` / ``attach_pace``); a model whose config names
    none reads by position."""
    pace = getattr(model, "talker_pace", None)
    if pace is not None:
        return pace
    named = getattr(getattr(model.config, "talker_config", None), "tis_pace", None) or "position"
    if named != "position":
        raise ValueError(f"this model's talker reads at the {named!r} pace (its config says so) but it was not "
                         "restored: call models.talker.attach_pace(model, tokenizer) after loading it")
    return Pace("position")


def set_pace(model, tokenizer, kind: str, frames_per_second: float | None = None, numbers: bool = False,
             learned: dict | None = None) -> Pace:
    """Give ``model``'s talker a pace, kept in its config (``save_pretrained`` writes it, ``attach_pace``
    restores it on load). ``numbers`` (duration pace): a number's tokens share the time of its words;
    ``learned`` (duration pace): token seconds measured on speech (``learn_seconds``), else estimated."""
    cfg = model.config.talker_config
    duration = kind == "duration"
    numbers = bool(numbers and duration)
    learned = learned if duration else None
    seconds, number_scale = token_seconds(tokenizer) if duration else None, 1.0
    if learned is not None:
        seconds, number_scale = learned_seconds(seconds, learned)
    pace = Pace(kind, seconds, frames_per_second, numbers, token_texts(tokenizer) if numbers else None,
                number_scale)
    cfg.tis_pace = kind
    cfg.tis_pace_frames_per_second = frames_per_second
    cfg.tis_pace_numbers = numbers
    cfg.tis_pace_learned = learned
    model.talker_pace = pace
    return pace


def attach_pace(model, tokenizer) -> None:
    """Restore the pace a checkpoint's config names (``set_pace``); none named: by position."""
    cfg = getattr(model.config, "talker_config", None)
    kind = getattr(cfg, "tis_pace", None) or "position"
    if kind != "position":
        set_pace(model, tokenizer, kind, getattr(cfg, "tis_pace_frames_per_second", None),
                 bool(getattr(cfg, "tis_pace_numbers", False)),  # older checkpoints: digits at 0.45 s
                 getattr(cfg, "tis_pace_learned", None))  # and estimated token seconds


# --- previous: what a talker step reads besides the text ---------------------------------------------
# "codes": the codec id before it (autoregressive, Qwen's talker): trained on the true ids, the talker
#   runs on its own, which drift from any speech it was taught (exposure bias, README).
# "none": no codec id (the bos only at the first step): each frame is said from the text rows it has
#   read (the token said, how far through it, the tokens before), so what it says cannot drift from what
#   it learned; it cannot keep a voice or a pitch contour by itself either (one voice is trained).
PREVIOUS = ("codes", "none")


def set_previous(model, kind: str) -> None:
    """What ``model``'s talker reads besides the text (``PREVIOUS``), kept in its config (saved with it)."""
    if kind not in PREVIOUS:
        raise ValueError(f"talker previous must be one of {PREVIOUS}, got {kind!r}; set talker.previous in params.yaml")
    model.config.talker_config.tis_previous = kind


def feeds_previous(model) -> bool:
    """Whether ``model``'s talker reads the codec id before each step (``set_previous``; default yes)."""
    kind = getattr(getattr(model.config, "talker_config", None), "tis_previous", None) or "codes"
    if kind not in PREVIOUS:
        raise ValueError(f"this talker's config names previous={kind!r}, not one of {PREVIOUS}")
    return kind == "codes"


def frame_bounds(weights: torch.Tensor, *, frames: int | None = None, frames_per_second: float | None = None) -> list[int]:
    """End frame of each spoken token: ``round(scale * cumsum(weights))``, the scale spreading exactly
    ``frames`` frames over the tokens (training) or ``frames_per_second`` (streaming)."""
    cum = torch.cumsum(weights.double(), 0)
    if frames is not None:
        total = float(cum[-1]) if len(cum) else 0.0
        scale = frames / total if total > 0 else 0.0
    else:
        scale = float(frames_per_second)
    return [int(round(float(c) * scale)) for c in cum]


def _progress(row: torch.Tensor, a, toward: torch.Tensor) -> torch.Tensor:
    """``row`` moved ``a`` (0 at a token's first frame, towards 1 at its last) of its own length along the
    unit direction ``toward``: how far through the token the frame is, without the token after it (a TiS
    response may wait blocks for its next token) and without new weights."""
    return row + (a * row.norm(dim=-1, keepdim=True)) * toward


def _said_at(rows: Sequence[torch.Tensor], bounds: Sequence[int], f: int, toward: torch.Tensor) -> torch.Tensor:
    """Frame ``f``'s text row while the tokens are said: token ``k`` (``bounds[k-1] <= f < bounds[k]``),
    with how far through it ``f`` is (``_progress``)."""
    import bisect

    k = bisect.bisect_right(bounds, f)
    start = bounds[k - 1] if k else 0
    return _progress(rows[k], (f - start) / (bounds[k] - start), toward)


@dataclass
class TalkerInputs:
    """Teacher-forced talker batch: feed ``inputs_embeds`` etc. to ``model.talker``; ``labels`` for CE."""

    inputs_embeds: torch.Tensor  # (B, S, H_thinker), before the talker's thinker_to_talker_proj
    attention_mask: torch.Tensor  # (B, S)
    position_ids: torch.Tensor  # (B, S)
    labels: torch.Tensor  # (B, S), -100 where nothing is predicted; (B, S, n) one per codebook for a talker that
    #   reads no previous codes (one step per frame, ``TalkerStream.steps_per_frame``)


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
        # The thinker's body only: its last hidden state (after the final norm) is what hidden_states[-1]
        # of the full forward holds, without the LM head over every position (16 % of the forward).
        out = thinker.model(**thinker_inputs)
        embeds = token_embeddings(thinker.get_input_embeddings(), thinker_inputs["input_ids"])
    return out.last_hidden_state, embeds


class ThinkerStateCache:
    """The frozen thinker's last hidden states of the rows a talker stage has trained on, by row key.

    The talker stage freezes the thinker, so a row's states are the same every time it comes round; from the
    second epoch on a batch whose rows are all here skips the thinker's forward (and its audio encoder). Key per
    row: ``collate``'s ``row_keys`` (a hash of the row's token ids and its audio's path); a row's states
    are its unpadded positions, so a row reads the same from any batch. Rows past ``max_mb`` are not kept (first
    come, kept: the stream's epochs come round in one order, so evicting would thrash); ``max_mb`` 0 keeps none.

        cache = ThinkerStateCache(1024)
        hidden = cache.hidden(model, batch, lambda: thinker_states(model, ...)[0])
    """

    def __init__(self, max_mb: float):
        if max_mb < 0:
            raise ValueError(f"the thinker state cache's size must be >= 0 MB, got {max_mb}")
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.rows: dict[int, torch.Tensor] = {}
        self.hits = self.misses = 0  # batches served from the cache / computed

    def usable(self, model, batch: dict) -> bool:
        """Only while training a frozen thinker, on a batch that names its rows."""
        return (self.max_bytes > 0 and model.training and batch.get("row_keys") is not None
                and not any(q.requires_grad for q in model.thinker.parameters()))

    def hidden(self, model, batch: dict, compute) -> torch.Tensor:
        """The batch's (B, T, H) states: from the cache when every row is there (zeros past each row's end,
        where the talker reads nothing), else ``compute()``'s, whose rows are then kept."""
        keys = [int(k) for k in batch["row_keys"].tolist()]
        lengths = [int(n) for n in batch["attention_mask"].sum(-1).tolist()]
        if all(k in self.rows for k in keys):
            self.hits += 1
            first = self.rows[keys[0]]
            out = first.new_zeros((len(keys), batch["attention_mask"].shape[1], first.shape[-1]))
            for i, (k, n) in enumerate(zip(keys, lengths)):
                out[i, :n] = self.rows[k][:n]
            return out
        self.misses += 1
        h = compute()
        for i, (k, n) in enumerate(zip(keys, lengths)):
            if k in self.rows:
                continue
            row = h[i, :n].detach().clone()
            size = row.numel() * row.element_size()
            if self.bytes + size <= self.max_bytes:
                self.rows[k] = row
                self.bytes += size
        return h


def row_key(input_ids: Sequence[int], audio) -> int:
    """A row's key in ``ThinkerStateCache``: its token ids and its audio's path (a signed 64-bit hash)."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(np.asarray(input_ids, np.int64).tobytes(), digest_size=8)
    h.update(str(audio or "").encode())
    return int.from_bytes(h.digest(), "little", signed=True)


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
    bos, eos, pad = token_embeddings(emb, ids).detach()
    head = bos + t.get_input_embeddings().weight[t.codec_pad_token].detach().to(bos.dtype)
    toward = eos / eos.norm().clamp(min=1e-12)  # the duration pace's progress direction (``_progress``)
    return {"text_bos": bos, "text_eos": eos, "text_pad": pad, "head": head, "toward": toward}


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


def _spoken(hidden: torch.Tensor, embeds: torch.Tensor, roles: torch.Tensor, ids: torch.Tensor,
            pace: Pace) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's spoken tokens for the duration pace: ``hidden + embedding`` rows ``(K, H)`` of the
    RESPONSE positions whose token says something, and their estimated seconds ``(K,)`` (``Pace.durations``
    over the response's tokens in order, as the stream reads them)."""
    valid = roles != ROLE_PAD
    resp = roles[valid] == int(Role.RESPONSE)
    w = torch.zeros(int(valid.sum()), device=ids.device)
    w[resp] = pace.durations(ids[valid][resp].tolist()).to(ids.device)
    keep = resp & (w > 0)
    if not keep.any():
        raise ValueError(
            "a sample has no spoken RESPONSE token, so the talker has nothing to speak; pass the roles from "
            "models.format (Layout.roles) and the input_ids of the full sequence"
        )
    return hidden[valid][keep] + embeds[valid][keep], w[keep]


def _frame_texts(rows: torch.Tensor, bounds: Sequence[int], n_frames: int, sp) -> torch.Tensor:
    """Text rows ``(n_frames, H)`` of frames ``0..n_frames-1`` under the duration pace: ``_said_at`` while
    the tokens are said, the text eos at the frame after them, then text pads."""
    dev, dt = rows.device, rows.dtype
    end = bounds[-1]
    out = sp["text_pad"].to(dt).expand(n_frames, -1).clone()
    said = min(end, n_frames)
    if said:
        b = torch.tensor(bounds, device=dev)
        f = torch.arange(said, device=dev)
        k = torch.searchsorted(b, f, right=True)
        start = torch.where(k > 0, b[(k - 1).clamp(min=0)], torch.zeros_like(k))
        a = ((f - start).double() / (b[k] - start).double()).to(dt)[:, None]
        out[:said] = _progress(rows[k], a, sp["toward"].to(dt))
    if end < n_frames:
        out[end] = sp["text_eos"].to(dt)
    return out


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
    input_ids: torch.Tensor | None = None,
    frames_per_second: float | None = None,
    bounds: Sequence[Sequence[int] | None] | None = None,
    prev_dropout: float = 0.0,
    prev_ids: Sequence[Sequence[int]] | None = None,
) -> TalkerInputs:
    """Teacher-forced talker inputs (layout in the module docstring); right-padded over the batch.

    hidden, embeds: ``(B, T, H)`` thinker last hidden states and token embeddings; roles: ``(B, T)``;
    codec_ids: one flat list of codec ids per sample (``Codec.flatten``), without bos/eos;
    codebooks: codec ids per frame (``codec.codebooks``): the talker reads one thinker position per frame.
    input_ids ``(B, T)``: the thinker's tokens, which a talker with the duration pace (``pace_of``)
    needs; it spreads each sample's frames over its spoken tokens, or with ``frames_per_second`` lays
    them out as streaming does. ``bounds`` (duration pace, training): per sample, the end frame of each
    spoken token where the speech really says it (``tasks.core.examples.frame_ends``), or None to spread
    by estimate. ``prev_dropout`` (training): the share of steps whose previous codec id is hidden from
    the talker (its embedding zeroed), so it learns to say what the text says rather than continue its
    own last frame (the free-running talker otherwise drifts from what it was taught: exposure bias).
    ``prev_ids`` (training, ``self_feed``): per sample, the ids fed as each step's previous codec id in
    place of the true ones (same length as its codec ids; ``own_previous`` makes them); targets stay true.
    """
    n = _check_codebooks(codebooks)
    if not 0.0 <= prev_dropout < 1.0:
        raise ValueError(f"prev_dropout must be in [0, 1), got {prev_dropout!r} (talker.prev_dropout)")
    if hidden.shape != embeds.shape or hidden.ndim != 3:
        raise ValueError(f"hidden {tuple(hidden.shape)} and embeds {tuple(embeds.shape)} must both be (B, T, H)")
    b = hidden.shape[0]
    if len(codec_ids) != b:
        raise ValueError(f"got {len(codec_ids)} codec id lists for a batch of {b}")
    if prev_ids is not None and [len(x) for x in prev_ids] != [len(x) for x in codec_ids]:
        raise ValueError("prev_ids must hold one id per codec id of each sample (models.talker.own_previous)")
    dev = hidden.device
    r = _roles_tensor(roles, tuple(hidden.shape[:2])).to(dev)
    t = model.talker
    codec_emb = t.get_input_embeddings()
    sp = _special(model, dev)
    pace = pace_of(model)
    previous = feeds_previous(model)
    if not previous and (prev_dropout > 0 or prev_ids is not None):
        raise ValueError("this talker reads no previous codec ids (talker.previous: none), so prev_dropout and "
                         "prev_ids (self_feed) have nothing to act on; pass neither")
    if pace.by_duration:
        if input_ids is None or tuple(input_ids.shape) != tuple(hidden.shape[:2]):
            raise ValueError("a talker with the duration pace needs the thinker's input_ids (B, T) to know how long "
                             "each response token takes to say")
        input_ids = input_ids.to(dev)
    rows, labels = [], []
    for i in range(b):
        ids = [int(x) for x in codec_ids[i]]
        _check_codec_ids(model, ids)
        steps = len(ids) + 1  # codec ids, then the codec eos
        frame_starts = torch.arange(0, steps, n, device=dev)
        if pace.by_duration:
            spoken, w = _spoken(hidden[i], embeds[i], r[i], input_ids[i], pace)
            ends = bounds[i] if bounds is not None and bounds[i] is not None else None
            if ends is None:
                ends = frame_bounds(w, frames=None if frames_per_second else len(ids) // n,
                                    frames_per_second=frames_per_second)
            elif len(ends) != len(w) or any(b < a for a, b in zip(ends, ends[1:])):
                raise ValueError(f"sample {i}: {len(ends)} token end frames for {len(w)} spoken response tokens "
                                 "(or not in order); the dataset's response_starts do not match its response_ids: "
                                 "rerun the synthesize stage")
            dt = spoken.dtype
            text = sp["text_pad"].to(dt).expand(steps, -1).clone()  # (steps, H)
            text[frame_starts] = _frame_texts(spoken, list(ends), len(frame_starts), sp)
        else:
            reply = _reply(hidden[i], embeds[i], r[i], sp)
            dt = reply.dtype
            text = sp["text_pad"].to(dt).expand(steps, -1).clone()  # (steps, H)
            read = frame_starts // n < len(reply)
            text[frame_starts[read]] = reply[frame_starts[read] // n]
        if not previous:  # one step per frame: its text row (the bos added at the first), all n ids at once
            x = text[frame_starts].clone()  # (frames + 1, H): the last frame reads the text eos
            x[0] = x[0] + codec_emb(torch.tensor(t.codec_bos_token, device=dev)).to(dt)
            rows.append(torch.cat([sp["head"][None].to(dt), x]))
            lb = torch.full((len(x) + 1, n), -100, dtype=torch.long, device=dev)
            lb[1:-1] = torch.tensor(ids, dtype=torch.long, device=dev).reshape(-1, n)
            lb[-1, 0] = t.codec_eos_token
            labels.append(lb)
            continue
        fed = ids if prev_ids is None else [int(x) for x in prev_ids[i]]
        prev = torch.tensor([t.codec_bos_token, *fed], device=dev)
        prev_rows = codec_emb(prev).to(dt)
        if prev_dropout > 0:  # never the bos: the talker always knows where it starts
            keep = torch.rand(steps, device=dev) >= prev_dropout
            keep[0] = True
            prev_rows = prev_rows * keep[:, None].to(dt)
        x = text + prev_rows  # (steps, H)
        rows.append(torch.cat([sp["head"][None].to(dt), x]))
        labels.append(torch.tensor([-100, *ids, t.codec_eos_token], device=dev))
    s = max(len(x) for x in rows)
    x = hidden.new_zeros(b, s, hidden.shape[-1])
    mask = torch.zeros(b, s, dtype=torch.long, device=dev)
    lab = torch.full((b, s) if previous else (b, s, n), -100, dtype=torch.long, device=dev)
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


def own_previous(model, logits: torch.Tensor, codec_ids: Sequence[Sequence[int]], rate: float, *,
                 codebook_sizes: Sequence[int] | None = None, temperature: float = 0.9, top_k: int = 40,
                 generator: torch.Generator | None = None) -> list[list[int]]:
    """Parallel scheduled sampling (Duckworth et al., 2019): from teacher-forced talker ``logits`` (B, S, V)
    (``talker_forward`` on ``build_talker_inputs``), per sample the ids to feed as previous codec ids: at
    each step, with probability ``rate``, the talker's own draw for the id before (at the streaming
    talker's ``temperature`` and ``top_k``, 0.9 and 40 as in models.session; only ids of that step's
    codebook, never the eos), else the true one. Training on them teaches the talker to get back to the
    speech from its own mistakes, which free-running decoding otherwise never saw (exposure bias).
    ``codebook_sizes`` None: any codec id."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate!r} (talker.self_feed)")
    if rate == 0.0:
        return [[int(x) for x in ids] for ids in codec_ids]
    limit = model.talker.codec_pad_token
    vocab = logits.shape[-1]
    if codebook_sizes:
        books = torch.stack([codebook_mask(k, vocab, model.talker.codec_eos_token, codebook_sizes)
                             for k in range(len(codebook_sizes))])
        books[:, model.talker.codec_eos_token] = False
    else:
        books = (torch.arange(vocab) < limit)[None]
    books = books.to(logits.device)
    dev, steps = logits.device, logits.shape[1] - 1

    def uniform(shape) -> torch.Tensor:  # from ``generator`` (on its device), then onto the logits' device
        return torch.rand(shape, generator=generator, device=generator.device if generator else "cpu").to(dev)

    # Row 1 + s predicts c[s], which step s + 1 reads as its previous id: one draw per row, whole batch.
    x = logits[:, 1:].detach().float()
    x = x.masked_fill(~books[torch.arange(steps, device=dev) % len(books)][None], float("-inf"))
    if temperature <= 0:
        own = x.argmax(-1)
    else:  # Gumbel-max over the top-k: a draw from the top-k softmax at this temperature
        v, idx = x.topk(min(top_k, x.shape[-1]) if top_k > 0 else x.shape[-1], dim=-1)
        g = -torch.log(-torch.log(uniform(v.shape).clamp(min=1e-20, max=1.0 - 1e-7)))
        own = idx.gather(-1, (v / temperature + g).argmax(-1, keepdim=True))[..., 0]
    out = []
    for i, ids in enumerate(codec_ids):
        n_ids = len(ids)
        if n_ids == 0:
            out.append([])
            continue
        truth = torch.tensor([int(x) for x in ids], dtype=torch.long, device=dev)
        out.append(torch.where(uniform((n_ids,)) < rate, own[i, :n_ids], truth).tolist())
    return out


def talker_loss(
    model,
    hidden: torch.Tensor,
    embeds: torch.Tensor,
    roles,
    codec_ids: Sequence[Sequence[int]],
    reduction: Literal["mean", "sum"] = "mean",
    *,
    codebooks: int,
    input_ids: torch.Tensor | None = None,
    bounds: Sequence[Sequence[int] | None] | None = None,
    prev_dropout: float = 0.0,
    self_feed: float = 0.0,
    codebook_sizes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Cross-entropy of the talker on ``codec_ids`` (+ the codec eos), given the thinker's states.

    ``reduction="sum"`` sums over the ``sum(talker_targets(len(c)) for c in codec_ids)`` targets (a
    trainer normalises by its global count); ``"mean"`` divides by that count. Gradients reach
    whatever requires grad: freeze the thinker (or pass detached states) to train only the talker.
    ``self_feed`` > 0 (training): a first, gradient-free pass draws the talker's own codes, and that share
    of the previous codec ids is fed from them (``own_previous``: parallel scheduled sampling).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    prev_ids = None
    if self_feed > 0:
        with torch.no_grad():
            first = build_talker_inputs(model, hidden, embeds, roles, codec_ids, codebooks=codebooks,
                                        input_ids=input_ids, bounds=bounds)
            prev_ids = own_previous(model, talker_forward(model, first), codec_ids, self_feed,
                                    codebook_sizes=codebook_sizes)
    inputs = build_talker_inputs(model, hidden, embeds, roles, codec_ids, codebooks=codebooks, input_ids=input_ids,
                                 bounds=bounds, prev_dropout=prev_dropout, prev_ids=prev_ids)
    logits = talker_forward(model, inputs)
    if inputs.labels.ndim == 3:  # one step per frame: each codebook's id from its own ids' softmax
        return frame_loss(model, logits, inputs.labels, codebook_sizes, reduction)
    # Position s predicts labels[s]: the layout already puts each target at its own input step.
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), inputs.labels.reshape(-1), ignore_index=-100,
        reduction=reduction,
    )


def frame_loss(model, logits: torch.Tensor, labels: torch.Tensor, codebook_sizes: Sequence[int] | None,
               reduction: Literal["mean", "sum"] = "sum") -> torch.Tensor:
    """Cross-entropy of one-step-per-frame logits ``(B, S, V)`` on ``labels`` ``(B, S, n)``: codebook k's id
    under the softmax over codebook k's ids (and the codec eos for k = 0), as ``step_batch`` draws them."""
    n = labels.shape[-1]
    if not codebook_sizes or len(codebook_sizes) != n:
        raise ValueError(f"a talker that says a frame per step needs the codec's {n} codebook sizes "
                         f"(codebook_sizes, codec.codebook_sizes), got {codebook_sizes!r}")
    eos = model.talker.codec_eos_token
    x = logits.float()
    total = x.new_zeros(())
    for k in range(n):
        allowed = codebook_mask(k, x.shape[-1], eos, codebook_sizes).to(x.device)
        total = total + torch.nn.functional.cross_entropy(
            x.masked_fill(~allowed, float("-inf")).reshape(-1, x.shape[-1]), labels[..., k].reshape(-1),
            ignore_index=-100, reduction="sum")
    if reduction == "mean":
        total = total / (labels != -100).sum().clamp(min=1)
    return total


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
        self.pace = pace_of(model)
        self.previous = feeds_previous(model)  # whether a step reads the codec id before it (PREVIOUS)
        # Talker steps per codec frame: one per id, or one per frame (all its ids) for a talker that reads none.
        self.steps_per_frame = self.n if self.previous else 1
        self.reply: list[torch.Tensor] = []  # (H,) rows: position pace, one per thinker position from the
        #   first response on; duration pace, one per spoken response token
        self.bounds: list[int] = []  # duration pace: the frame each spoken token ends at
        self._said = 0.0  # duration pace: estimated seconds of the spoken tokens so far
        self._durations = (SaidDurations(True, self.pace.number_scale)  # numbers said as words
                           if self.pace.numbers else None)
        self._held: dict[int, torch.Tensor] = {}  # rows of a number's tokens until it ends (``_durations``)
        self.started = False  # the first RESPONSE position arrived
        self.thinker_done = False
        self.codes: list[int] = []
        self.steps = 0  # talker forward steps (codec ids + the eos prediction)
        self.logits: torch.Tensor | None = None  # (V,) logits of the last step
        self.done = False
        self.ended_with_eos = False
        # The codec eos is allowed from this frame on (None: not yet; the caller's end rule sets it)
        self.min_frames: int | None = 0

    def push(self, role: Role | int, hidden: torch.Tensor | None = None, embed: torch.Tensor | None = None,
             token: int | None = None) -> None:
        """Receive one thinker position: ``hidden`` and ``embed`` ``(H,)`` are read at RESPONSE positions
        only, and (duration pace) its ``token`` id."""
        if self.thinker_done:
            raise RuntimeError("push after finish(): the thinker already ended")
        if int(role) == int(Role.RESPONSE):
            if hidden is None or embed is None:
                raise ValueError("a RESPONSE position needs the thinker's hidden state and token embedding")
            self.started = True
            if not self.pace.by_duration:
                self.reply.append(hidden + embed)
                return
            if token is None:
                raise ValueError("a talker with the duration pace needs each RESPONSE position's token id")
            if self._durations is None:
                self._say([(0, self.pace.own(int(token)))], {0: hidden + embed})
                return
            self._held[self._durations.n] = hidden + embed
            self._say(self._durations.push(self.pace.text(int(token)), self.pace.own(int(token))), self._held)
        elif self.started and not self.pace.by_duration:
            self.reply.append(self.sp["text_pad"])

    def _say(self, timed: Sequence[tuple[int, float]], rows: dict[int, torch.Tensor]) -> None:
        """Append the tokens whose seconds are known (``(index, seconds)`` in order; rows by index): each one
        that says something is a reply row ending at the frame its cumulative seconds reach."""
        for i, w in timed:
            row = rows.pop(i)
            if w > 0:
                self._said += w
                self.reply.append(row)
                self.bounds.append(int(round(self._said * self.pace.frames_per_second)))

    def finish(self) -> None:
        """The thinker ended: the reply is complete (then the text eos, then pads)."""
        if self._durations is not None and not self.thinker_done:
            self._say(self._durations.flush(), self._held)  # a number the response ended with
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

    @property
    def text_end_frame(self) -> int:
        """The frame the talker reads the text eos at, once the thinker has ended (the response is said)."""
        if self.pace.by_duration:
            return self.bounds[-1] if self.bounds else 0
        return len(self.reply)

    def ready(self) -> bool:
        """Whether the next step has its input (never true once done)."""
        if self.done or not self.started:
            return False
        if len(self.codes) % self.n:
            return True  # inside a frame the talker reads the text pad
        if self.thinker_done:
            return True
        if self.pace.by_duration:  # the token said at this frame has arrived
            import bisect

            return bisect.bisect_right(self.bounds, self.frame) < len(self.reply)
        return self.frame < len(self.reply)

    def _text(self, s: int) -> torch.Tensor:
        if s % self.n:
            return self.sp["text_pad"]
        f = s // self.n
        end = self.text_end_frame
        if f < end:
            return _said_at(self.reply, self.bounds, f, self.sp["toward"]) if self.pace.by_duration else self.reply[f]
        return self.sp["text_eos"] if f == end else self.sp["text_pad"]

    @property
    def sampling(self):
        from models.runner import SamplingParams

        return SamplingParams(max(0.0, self.temperature), self.top_k if self.temperature > 0 else 0,
                              generator=self.generator)

    def _inputs(self) -> torch.Tensor:
        """The next step's input rows ``(T, H)`` (thinker width): the head row goes in with step 0."""
        s = len(self.codes)
        text = self._text(s)
        if s == 0 or self.previous:
            prev = torch.tensor([self.bos_id if s == 0 else self.codes[-1]], device=text.device)
            text = text + self.codec_emb(prev)[0].to(text.dtype)
        x = text[None]  # (1, H)
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

    def _accept(self, toks: Sequence[int]) -> int | None:
        """One step's ids (one, or a whole frame's): the eos ends the speech, else they are the next codes."""
        self.steps += 1
        if toks[0] == self.eos_id:
            self.done, self.ended_with_eos = True, True
            return None
        self.codes.extend(int(x) for x in toks)
        if self.max_codes is not None and len(self.codes) >= self.max_codes:
            self.done = True
        return int(toks[-1])

    def _masks(self) -> list[torch.Tensor]:
        """The allowed ids of each id this step makes (``_allowed`` for the first, the eos only there)."""
        if self.steps_per_frame == 1 and self.n > 1:
            return [self._allowed()] + [self.allowed[k] for k in range(1, self.n)]
        return [self._allowed()]

    def step(self) -> int | None:
        """One talker step: returns the (last) codec id it made, or None for the codec eos (or the cap)."""
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
    rows, params, masks, owner = [], [], [], []
    for j, (st, lg) in enumerate(zip(streams, logits)):
        st.logits = lg
        for m in st._masks():  # a frame-per-step talker draws each codebook's id from the same logits
            rows.append(lg)
            params.append(st.sampling)
            masks.append(m)
            owner.append(j)
    toks = sample(torch.stack(rows), params, torch.stack(masks)).tolist()
    per = [[] for _ in streams]
    for j, t in zip(owner, toks):
        per[j].append(t)
    return [st._accept(t) for st, t in zip(streams, per)]


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
    input_ids=None,
) -> list[int]:
    """Codec ids for one whole sample (``(1, T, H)`` states) until the codec eos (not returned) or
    ``max_new_tokens`` ids: the whole sequence is pushed before the first talker step. ``input_ids``
    ``(1, T)``: the thinker's tokens (a talker with the duration pace needs them)."""
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
    toks = None if input_ids is None else torch.as_tensor(input_ids).reshape(-1).tolist()
    if stream.pace.by_duration and (toks is None or len(toks) != len(r)):
        raise ValueError("a talker with the duration pace needs the sample's input_ids (1, T)")
    for i, role in enumerate(r):
        if role != ROLE_PAD:
            stream.push(role, hidden[0, i], embeds[0, i], token=None if toks is None else toks[i])
    stream.finish()
    while stream.ready():
        stream.step()
    return stream.codes

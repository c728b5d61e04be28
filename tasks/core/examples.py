"""Training examples for every stage, read lazily: dataset rows -> laid-out sequences with labels.

A stage's data is a ``StageData``: rows stay on disk (``tasks.core.dataset.RowStore``) and become an
``Example`` only when a batch asks for them. ``BatchStream`` walks one seeded permutation per epoch and
hands out global batches; rows that do not fit the stage (longer than ``max_len``, or a layout the
format rejects) are skipped and counted. Every rank walks the same stream and builds the token part
of the whole global batch (cheap), so all ranks agree on the batch and its number of targets; audio
features are computed only for a rank's own share (``StageData.load_features``), through a bounded
LRU cache. Memory and per-step time do not grow with the number of rows.

    data = StageData(data_dir, "train", tok, p, spec("text_tis"), p.text_tis, "tis")
    stream = BatchStream(data, batch_size=8, seed=0)
    batch = stream.next_batch()               # list[Example]; stream.cursor says where it stands
    tensors = collate(batch, tok.pad_token_id)
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.format import format_info
from models.losses import IGNORE
from tasks.core.dataset import RowStore
from tasks.core.stages import StageSpec

log = logging.getLogger("trainer")

# Columns a training stage reads (the dataset contract is tasks/core/dataset.py).
COLUMNS = ["id", "kind", "question", "spoken_question", "response", "reasoning", "answer", "response_ids", "reasoning_ids",
           "min_block", "question_audio", "response_audio"]
TIMING_COLUMNS = ["response_seconds", "response_starts"]  # talker stages, where the dataset has them


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the loss mask is off
    roles: list[int]  # models.format.Role per position
    audio: Path | None = None  # the spoken question, when the prompt is audio
    features: Any = None  # (128, L) log-mel of ``audio``, filled by StageData.load_features
    codes: list[int] | None = None  # flat codec ids of the response speech (talker targets)
    bounds: list[int] | None = None  # end frame of each spoken response token in ``codes`` (``frame_ends``)

    @property
    def size(self) -> int:
        """Positions this example costs a forward: its sequence, plus the talker's codec ids."""
        return len(self.input_ids) + len(self.codes or ())

    @property
    def n_targets(self) -> int:
        if self.codes is not None:
            from models.talker import talker_targets

            return talker_targets(len(self.codes))
        # Labels are shifted by one: position 0 is never a target.
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def uses_audio(index: int, input: str, text_fraction: float, seed: int, epoch: int = 0) -> bool:
    """Does row ``index`` get a spoken prompt? ``audio``: always; ``text``: never; ``mixed``: a seeded
    ``1 - text_fraction`` share of the rows, the same in every epoch and on every rank; ``replay``: the
    same share drawn anew each ``epoch`` (every spoken row is heard, and a ``text_fraction`` of the
    examples rehearse the text skill of the stage before)."""
    if input not in ("mixed", "replay"):
        return input == "audio"
    if text_fraction <= 0.0:
        return True
    key = f"{seed}/{index}" if input == "mixed" else f"{seed}/replay/{epoch}/{index}"
    h = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 >= text_fraction


def in_words(index: int, epoch: int, words_fraction: float, seed: int) -> bool:
    """Does row ``index`` get its text prompt with the numbers in words (the spoken question's text, as
    a transcript reads it) rather than digits, in ``epoch``? A seeded ``words_fraction`` share, drawn
    anew each epoch, so a row is seen in both forms; the same on every rank and after a resume."""
    if words_fraction <= 0.0:
        return False
    h = hashlib.blake2b(f"{seed}/words/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < words_fraction


def schedule_for(index: int, epoch: int, schedules, seed: int):
    """The speak:think schedule row ``index`` trains at in ``epoch`` (``params.schedule.mix``): one of
    ``schedules``, drawn from a hash of (seed, epoch, index), so every rank and a resumed run draw the
    same one, and a row meets other ratios in other epochs."""
    if len(schedules) == 1:
        return schedules[0]
    h = hashlib.blake2b(f"{seed}/schedule/{epoch}/{index}".encode(), digest_size=8).digest()
    return schedules[int.from_bytes(h, "big") % len(schedules)]


def min_block_for(row: dict, tok, schedule) -> list[int]:
    """The drift constraints of ``row``'s response under ``schedule`` (``models.drift``): the dataset
    stores them for params.yaml's speak:think only, and a number derived in reasoning token j becomes
    speakable from block ``j // think + 1``, which moves with ``think``."""
    from models.drift import tokenize_sample

    t = tokenize_sample(tok, row["question"], row["response"], row["reasoning"], schedule)
    if t.response_ids != list(row["response_ids"]) or t.reasoning_ids != list(row["reasoning_ids"]):
        raise ValueError(f"sample {row.get('id', '?')}: its response/reasoning text no longer tokenizes to the ids "
                         "stored by synthesize (was the tokenizer changed?); rerun synthesize (`dvc repro synthesize`)")
    return t.min_block


def heard_first(row: dict, tok, think: int, form: str = "digits") -> dict:
    """``row`` with its reasoning led by what a listener heard: the spoken question as text, then spaces up
    to a whole number of ``think`` blocks, so the reasoning after it keeps its layout
    (``synthesize.align_facts`` placed column facts at block starts) and every drift constraint moves by
    exactly those blocks. ``form`` (``model.transcript``): ``digits``, numbers as digits
    (``numbers_as_digits``, as a text prompt holds them); ``words``, as said (what ``align`` learns to
    write); ``both``, the words, then the question again with digits.

    With a spoken question the prompt holds audio, not digits: the scratchpad's operands and column
    digits must come from somewhere the model can copy them from. Trained this way, the model writes its
    transcript in the silent stream and reasons from it as it does from a text prompt."""
    from models.tokenizer import encode, numbers_as_digits

    said = str(row.get("spoken_question") or row["question"])
    if form not in ("digits", "words", "both"):
        raise ValueError(f"model.transcript must be digits, words or both, got {form!r}")
    digits = numbers_as_digits(said) if form != "words" else ""  # once per example, only where written
    heard = {"digits": digits, "words": said, "both": f"{said} {digits}"}[form].strip()
    ids = encode(tok, heard + " ")
    space = encode(tok, " ")
    if len(space) != 1:
        raise ValueError(f"the tokenizer splits a space into {len(space)} tokens; model.transcribe_first needs one")
    ids += space * (-len(ids) % think)
    k = len(ids) // think
    return {**row, "reasoning": heard + " " + row["reasoning"], "reasoning_ids": ids + list(row["reasoning_ids"]),
            "min_block": [b + k if b > 0 else 0 for b in row["min_block"]]}


def body(layout: str, row: dict, prompt: list[int], tok, ids, schedule, fmt: str) -> tuple[list[int], list[bool], list[int]]:
    """The thinker sequence for a target layout -> (ids, loss mask, roles), prompt included.
    ``row["min_block"]`` must hold the drift constraints for ``schedule`` (``min_block_for``)."""
    from models.format import Role, build
    from models.tokenizer import encode

    if layout == "interleaved":
        lay = build(fmt, prompt, row["response_ids"], row["reasoning_ids"], ids, schedule,
                    min_block=row["min_block"], delay_eos=True)
        return lay.input_ids, lay.loss_mask, [int(r) for r in lay.roles]
    if layout == "solution":
        tail = list(row["reasoning_ids"]) + list(row["response_ids"]) + [ids.eos]
    else:  # transcript: what was said, as text
        tail = encode(tok, row["spoken_question"] or row["question"]) + [ids.eos]
    return (prompt + tail, [False] * len(prompt) + [True] * len(tail),
            [int(Role.PROMPT)] * len(prompt) + [int(Role.RESPONSE)] * len(tail))


class FeatureCache:
    """Log-mels by audio path, least recently used dropped past ``max_mb``."""

    def __init__(self, max_mb: int):
        self.max_bytes = max_mb * 2**20
        self.bytes = 0
        self.items: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.hits = self.misses = 0

    def get(self, path: Path):
        import soundfile as sf

        from models.audio import log_mel

        key = str(path)
        if key in self.items:
            self.items.move_to_end(key)
            self.hits += 1
            return self.items[key]
        self.misses += 1
        wave, sr = sf.read(key, dtype="float32", always_2d=False)
        feats = log_mel(wave, sr)[0]
        size = feats.numel() * feats.element_size()
        if size <= self.max_bytes:
            self.items[key] = feats
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()
        return feats


class CodesIndex:
    """The codec stage's ``codes.parquet`` (response_audio -> flat codec ids), read lazily."""

    def __init__(self, codec_dir: Path):
        table = Path(codec_dir) / "codes.parquet"
        if not table.exists():
            raise FileNotFoundError(f"{table} not found; run the codec stage first (`dvc repro codec`)")
        import pyarrow.parquet as pq

        meta = pq.read_schema(table).metadata or {}
        if b"codebooks" not in meta:
            raise ValueError(f"{table} does not say how many codebooks a frame has (written by an older codec "
                             "stage); rerun it (`dvc repro codec`)")
        self.codebooks = int(meta[b"codebooks"])
        # Each codebook's id count (the talker's self_feed samples within them); older tables: unknown.
        sizes = meta.get(b"codebook_sizes")
        self.codebook_sizes = tuple(json.loads(sizes)) if sizes else None
        self.store = RowStore(table, ["response_audio", "codes"])
        self.row_of = {a: i for i, a in enumerate(self.store.column("response_audio"))}

    def __call__(self, response_audio: str) -> list[int]:
        if response_audio not in self.row_of:
            raise KeyError(f"{response_audio} has no codec ids in the codec stage's codes.parquet; the data "
                           "changed after the codec stage ran: rerun it (`dvc repro codec`)")
        return [int(x) for x in self.store[self.row_of[response_audio]]["codes"]]


def frame_ends(response_ids: list[int], starts: list[float], seconds: float, frames: int, weights) -> list[int] | None:
    """End frame of each *spoken* response token (``weights[id] > 0``: ``models.talker.token_seconds``)
    in a clip of ``frames`` codec frames lasting ``seconds``, from when each response token starts
    (``response_starts``): a token ends where the next spoken one starts, the last at the clip's end.
    ``None`` when the row has no usable timing (the talker then spreads the clip by estimate)."""
    if not starts or len(starts) != len(response_ids) or seconds <= 0 or frames <= 0:
        return None
    from models.saying import spoken_spans

    spans = spoken_spans(starts, [float(weights[i]) > 0 for i in response_ids], seconds)
    if not spans:
        return None
    per_second = frames / seconds
    ends = [min(frames, max(0, int(round(end * per_second)))) for _, _, end in spans]
    ends[-1] = frames  # the last spoken token runs to the clip's end
    return ends


def aligned_responses(data: "StageData", limit: int = 0):
    """``(response token ids, response_starts, response_seconds)`` of each row of ``data`` (the first
    ``limit``; 0 = all) whose response speech has aligned timing (the synthesize stage's espeak word
    times): what ``models.talker.learn_seconds`` measures token seconds on."""
    n = len(data) if limit <= 0 else min(limit, len(data))
    for i in range(n):
        row = data.rows[i]
        if row.get("response_audio") and row.get("response_starts") and row.get("response_ids") is not None:
            yield [int(x) for x in row["response_ids"]], list(row["response_starts"]), float(row["response_seconds"] or 0)


def speech_pace(data: "StageData", durations, limit: int = 2000) -> tuple[float, int]:
    """Codec frames per estimated second of speech over the first ``limit`` rows of ``data`` with response
    speech, and how many rows it read. ``durations``: a response's token ids -> seconds per token
    (``models.talker.Pace.durations``), the estimate the streaming talker paces itself by."""
    if data.codes is None:
        raise ValueError(f"{data.spec.name} has no codec ids to measure the speech pace on")
    frames = est = 0.0
    rows = 0
    for i in range(min(limit, len(data))):
        row = data.rows[i]
        if not row.get("response_audio"):
            continue
        ids = data.tok(row["response"], add_special_tokens=False)["input_ids"]
        frames += len(data.codes(row["response_audio"])) / data.codes.codebooks
        est += float(durations(ids).sum())
        rows += 1
    if not rows or est <= 0:
        raise ValueError(f"{data.rows.path}: no response speech with words to measure the talker's pace on; "
                         "check the synthesize and codec stages")
    return frames / est, rows


def _has_columns(parquet: Path, columns: list[str]) -> bool:
    import pyarrow.parquet as pq

    return parquet.exists() and all(c in pq.read_schema(parquet).names for c in columns)


def rows_of_kinds(table: Path, kinds: tuple[str, ...], stage: str, split: str) -> list[int] | None:
    """Positions of ``table``'s rows whose ``kind`` is one of ``kinds`` (None: no filter, every row). A training
    split with none of them is an error naming the kinds it has; an empty validation split only has no loss."""
    if not kinds:
        return None
    import pyarrow.parquet as pq

    if "kind" not in pq.read_schema(table).names:
        raise ValueError(f"{stage}.kinds {list(kinds)} needs a `kind` column in {table}; rerun the synthesize "
                         f"stage (`dvc repro synthesize`) or set {stage}.kinds: []")
    have = pq.read_table(table, columns=["kind"]).column("kind").to_pylist()
    index = [i for i, k in enumerate(have) if k in kinds]
    if not index and split == "train":
        raise ValueError(f"{stage}.kinds {list(kinds)}: none of the {len(have)} rows of {table} is of those kinds "
                         f"(it has {sorted(set(have))}); change {stage}.kinds in params.yaml or add a source that "
                         f"makes them (synthesize.sources)")
    return index


def rows_with_speech(table: Path, index: list[int] | None, stage: str, split: str) -> list[int] | None:
    """Of ``index`` (None: every row), the positions of ``table``'s rows whose response was spoken (a
    ``response_audio``); None when that is every row. A training split with none is an error."""
    import pyarrow.parquet as pq

    audio = pq.read_table(table, columns=["response_audio"]).column("response_audio").to_pylist()
    keep = [i for i in (range(len(audio)) if index is None else index) if audio[i]]
    if not keep and split == "train":
        raise ValueError(f"{stage}: none of the rows of {table} has response speech to train on; set "
                         "synthesize.tts.speak_response: true and speak_response: true on a source "
                         "(synthesize.sources), then rerun synthesize")
    return None if index is None and len(keep) == len(audio) else keep


class StageData:
    """One split of a stage's data: ``example(i)`` builds row ``i`` for this stage's input and target."""

    def __init__(self, data_dir: str | Path, split: str, tokenizer, p, spec: StageSpec, sp, fmt: str = "tis",
                 codec_dir: str | Path | None = None, feature_cache_mb: int | None = None):
        from models.format import Schedule
        from models.tokenizer import control_ids

        self.data_dir = Path(data_dir)
        # Text examples may come from the dataset's larger text pool (no audio: it costs no TTS). A text stage
        # reads only the pool; a mixed one (pretrain) asks its text examples from the pool and its spoken
        # ones from the spoken rows (``example``).
        pool = self.data_dir / "text.parquet"
        self.pooled = (split == "train" and spec.input in ("text", "mixed") and getattr(sp, "text_pool", False)
                       and pool.exists())
        spoken_table = self.data_dir / f"{split}.parquet"
        table = pool if self.pooled else spoken_table
        # The talker's alignment (duration pace): when each response token starts in its speech.
        # Read when the talker trains on the aligned frames (talker.timing: aligned) or measures its token seconds
        # on them (talker.seconds: learned, ``aligned_responses``), either or both.
        timed = bool(spec.t.codec and getattr(sp, "pace", "") == "duration" and _has_columns(table, TIMING_COLUMNS)
                     and (getattr(sp, "timing", "estimated") == "aligned" or getattr(sp, "seconds", "") == "learned"))
        self.aligned = timed and getattr(sp, "timing", "estimated") == "aligned"
        self.rows = RowStore(table, COLUMNS + (TIMING_COLUMNS if timed else []))
        # A stage that trains on some kinds of question only (align.kinds): the rows it reads, by position.
        self.index = rows_of_kinds(table, tuple(getattr(sp, "kinds", ()) or ()), spec.name, split)
        if spec.t.codec:  # the talker: only rows whose response was spoken (synthesize.sources[].speak_response)
            self.index = rows_with_speech(table, self.index, spec.name, split)
        self.spoken = RowStore(spoken_table, COLUMNS) if self.pooled and spec.input == "mixed" else None
        self.tok, self.p, self.spec, self.sp, self.fmt = tokenizer, p, spec, sp, fmt
        self.ids = control_ids(tokenizer)
        self.schedule = Schedule(p.schedule.speak, p.schedule.think)  # the one the dataset's min_block is for
        # TiS rows train at a ratio drawn from schedule.mix (when set); think-first has no ratio.
        mixed = format_info(fmt).interleaved and spec.t.layout == "interleaved" and p.schedule.mix
        self.schedules = tuple(Schedule(s, t) for s, t in p.schedule.mix) if mixed else (self.schedule,)
        self.drawn: collections.Counter = collections.Counter()  # (speak, think) -> examples built
        # the share asked as text: pretrain's and acoustic_tis's text_fraction; text_tis asks a spoken_fraction spoken
        self.text_fraction = getattr(sp, "text_fraction", 1.0 - getattr(sp, "spoken_fraction", 1.0))
        self.words_fraction = getattr(sp, "words_fraction", 0.0)
        self.transcribe = bool(p.model.transcribe_first) and spec.t.layout in ("solution", "interleaved")
        self.codes = CodesIndex(Path(codec_dir)) if spec.t.codec else None
        self.weights = None
        if self.aligned:
            from models.talker import token_seconds

            self.weights = token_seconds(tokenizer).tolist()
        self.cache = FeatureCache(p.trainer.feature_cache_mb if feature_cache_mb is None else feature_cache_mb)

    def __len__(self) -> int:
        if self.index is not None:
            return len(self.index)
        return max(len(self.rows), len(self.spoken)) if self.spoken is not None else len(self.rows)

    def _audio(self, row: dict, col: str) -> Path:
        rel = row.get(col) or ""
        if not rel:
            hint = " (or set text_tis.spoken_fraction: 0 to train it on text alone)" if self.spec.name == "text_tis" else ""
            raise ValueError(f"sample {row.get('id', '?')} has no {col}; the {self.spec.name} stage needs a dataset "
                             f"with audio (data/synthesize), not {self.data_dir}{hint}")
        return self.data_dir / rel

    def example(self, i: int, epoch: int = 0) -> Example | str:
        """Row ``i`` as an Example without audio features, or the reason it does not fit this stage.
        ``epoch`` picks the row's speak:think ratio when ``schedule.mix`` is set (``schedule_for``)."""
        import soundfile as sf

        from models.audio import audio_prompt, mel_frames, n_audio_tokens
        from models.format import FormatError
        from models.tokenizer import text_prompt

        spoken = uses_audio(i, self.spec.input, self.text_fraction, self.p.seed, epoch)
        if self.spoken is not None:  # a mixed stage on the pool: text from the pool, audio from the spoken rows
            row = self.spoken[i % len(self.spoken)] if spoken else self.rows[i % len(self.rows)]
        else:
            row = self.rows[i if self.index is None else self.index[i]]
        audio, as_said = None, False
        if spoken:
            audio = self._audio(row, "question_audio")
            info = sf.info(str(audio))
            prompt = audio_prompt(self.tok, n_audio_tokens(mel_frames(info.frames, info.samplerate)))
        else:
            words = in_words(i, epoch, self.words_fraction, self.p.seed) and row["spoken_question"]
            # model.transcript words/both, in a stage that also hears (pretrain, acoustic_tis): a question asked
            # in words stays in words, and its reasoning writes it down as a spoken one's does, so the words ->
            # digits step is learned on text, which costs no TTS (text_tis keeps digits: its layout, its cost)
            as_said = (bool(words) and self.transcribe and self.p.model.transcript != "digits"
                       and self.spec.input != "text")
            prompt = text_prompt(self.tok, row["spoken_question"] if words else row["question"], as_said=as_said)
        schedule = schedule_for(i, epoch, self.schedules, self.p.seed)
        if schedule != self.schedule:
            row = {**row, "min_block": min_block_for(row, self.tok, schedule)}
        if (spoken or as_said) and self.transcribe:
            row = heard_first(row, self.tok, schedule.think, self.p.model.transcript)
        try:
            seq, mask, roles = body(self.spec.t.layout, row, prompt, self.tok, self.ids, schedule, self.fmt)
        except FormatError:
            return "format"
        if len(seq) > self.sp.max_len:
            return "too_long"
        self.drawn[(schedule.speak, schedule.think)] += 1
        codes = self.codes(row["response_audio"]) if self.codes is not None else None
        bounds = None
        if self.aligned and codes is not None:
            bounds = frame_ends(list(row["response_ids"]), list(row["response_starts"] or []),
                                float(row["response_seconds"] or 0.0), len(codes) // self.codes.codebooks, self.weights)
        labels = [t if m else IGNORE for t, m in zip(seq, mask)]
        return Example(seq, labels, roles, audio, None, codes, bounds)

    def load_features(self, batch: list[Example]) -> list[Example]:
        for e in batch:
            if e.audio is not None and e.features is None:
                e.features = self.cache.get(e.audio)
        return batch

    def all_examples(self) -> tuple[list[Example], collections.Counter]:
        """Every row in order (validation), with the count of dropped rows by reason."""
        out, dropped = [], collections.Counter()
        for i in range(len(self)):
            e = self.example(i)
            if isinstance(e, str):
                dropped[e] += 1
            else:
                out.append(e)
        return out, dropped


LENGTH_BIN = 16  # positions: rows whose sizes fall in the same bin count as the same length


class BatchStream:
    """Global batches from one seeded permutation of the rows per epoch, read in order.

    ``cursor`` is the position in the endless stream of permuted rows; a checkpoint stores it, so a
    resumed run reads exactly the batches an uninterrupted one would.

    ``length_group`` > 1 groups rows of similar length (as HF's ``group_by_length``): the next
    ``length_group x batch_size`` rows that fit are sorted by length (in bins of ``LENGTH_BIN``
    positions, random order within a bin) and cut into ``length_group``
    batches, handed out in a seeded random order; at most one epoch's rows (``len(data) //
    batch_size`` batches, so a small dataset groups less or not at all). Every row is still read once per epoch, in
    permutation order across groups, but a batch pads far less (the built-in mixture: 44 % of a
    batch's positions were padding). While a group is being handed out, ``cursor`` stays at the
    group's first row and ``group_batch`` counts the batches it has given, so a checkpoint of
    ``(cursor, group_batch)`` resumes exactly.
    """

    def __init__(self, data: StageData, batch_size: int, seed: int, cursor: int = 0, *, length_group: int = 1,
                 group_batch: int = 0):
        if len(data) == 0:
            raise ValueError(f"{data.rows.path} has no rows; check the data stage")
        if length_group < 1:
            raise ValueError(f"length_group must be >= 1 (1 = no grouping), got {length_group}")
        # A group never holds more than one epoch's rows: past that it would hold a row twice, sorting
        # would put the copies side by side, and a batch of two rows would be one row twice.
        fit = max(1, min(length_group, len(data) // batch_size))
        if fit < length_group:
            log.info("%s: %d rows make %d batch(es) of %d: length groups of %d instead of %d", data.spec.name,
                     len(data), len(data) // batch_size, batch_size, fit, length_group)
        if not 0 <= group_batch < fit:
            raise ValueError(f"group_batch {group_batch} is outside a group of {fit} batches (length_group "
                             f"{length_group}, at most one epoch of {len(data)} rows)")
        self.data, self.batch_size, self.seed, self.cursor = data, batch_size, seed, cursor
        self.length_group, self.group_batch = fit, group_batch
        self.dropped: collections.Counter = collections.Counter()
        self._epoch, self._perm = -1, None
        self._group: list[list[Example]] | None = None  # the current group's batches, in hand-out order
        self._next_cursor = cursor  # the row after the current group

    def _index(self, k: int) -> int:
        import numpy as np

        epoch, i = divmod(k, len(self.data))
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.data))
            self._epoch = epoch
        return int(self._perm[i])

    def _take(self, n: int, at: int) -> tuple[list[Example], int]:
        """The next ``n`` rows that fit, reading the stream from position ``at``; returns them and the
        position after the last one read."""
        out: list[Example] = []
        skipped_in_a_row = 0
        while len(out) < n:
            e = self.data.example(self._index(at), epoch=at // len(self.data))
            at += 1
            if isinstance(e, str):
                self.dropped[e] += 1
                skipped_in_a_row += 1
                if skipped_in_a_row >= len(self.data):
                    raise ValueError(
                        f"{self.data.spec.name}: no row of {self.data.rows.path} fits (dropped: {dict(self.dropped)}); "
                        f"raise {self.data.spec.name}.max_len in params.yaml or check the data stage")
                continue
            skipped_in_a_row = 0
            out.append(e)
        return out, at

    def next_batch(self) -> list[Example]:
        if self.length_group == 1:
            out, self.cursor = self._take(self.batch_size, self.cursor)
            return out
        import numpy as np

        if self._group is None:
            rows, self._next_cursor = self._take(self.length_group * self.batch_size, self.cursor)
            # Coarse bins keep rows of about the same size in their random order: a task of near-uniform
            # length is batched as without grouping (sorting a few tokens apart made batches of one
            # carry pattern, and 2-digit addition learned less per step); padding stays low.
            order = sorted(range(len(rows)), key=lambda i: (rows[i].size // LENGTH_BIN, i))
            batches = [[rows[i] for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
                       for b in range(self.length_group)]
            # Seeded by where the group starts, so a resumed stream deals the same batches in the same order.
            shuffle = np.random.default_rng([self.seed, 7, self.cursor]).permutation(self.length_group)
            self._group = [batches[int(i)] for i in shuffle]
        out = self._group[self.group_batch]
        self.group_batch += 1
        if self.group_batch == self.length_group:
            self._group, self.group_batch, self.cursor = None, 0, self._next_cursor
        return out


def collate(batch: list[Example], pad_id: int) -> dict:
    """Right-padded batch; audio features only for the samples with an audio prompt (in batch order,
    as the thinker fills its ``<|AUDIO|>`` placeholders), codec ids padded with IGNORE."""
    import torch

    from models.audio import collate_features
    from models.talker import ROLE_PAD

    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(batch), T), dtype=torch.long)
    roles = torch.full((len(batch), T), ROLE_PAD, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attn[i, :n] = 1
        roles[i, :n] = torch.tensor(e.roles)
    out = {"input_ids": ids, "labels": labels, "attention_mask": attn, "roles": roles}
    if any(e.audio is not None and e.features is None for e in batch):
        raise ValueError("collate got spoken examples without features; call StageData.load_features first")
    feats = [e.features for e in batch if e.features is not None]
    if feats:
        out.update(collate_features(feats))
    if any(e.codes is not None for e in batch):
        n = max(len(e.codes) for e in batch)
        codes = torch.full((len(batch), n), IGNORE, dtype=torch.long)
        for i, e in enumerate(batch):
            codes[i, : len(e.codes)] = torch.tensor(e.codes)
        out["codes"] = codes
        from models.talker import row_key

        # each row's key for the frozen thinker's state cache (models.talker.ThinkerStateCache)
        out["row_keys"] = torch.tensor([row_key(e.input_ids, e.audio) for e in batch], dtype=torch.long)
        if any(e.bounds for e in batch):  # token end frames, -1 padded; a row of -1: spread by estimate
            k = max(len(e.bounds or ()) for e in batch)
            bounds = torch.full((len(batch), k), -1, dtype=torch.long)
            for i, e in enumerate(batch):
                if e.bounds:
                    bounds[i, : len(e.bounds)] = torch.tensor(e.bounds)
            out["bounds"] = bounds
    return out

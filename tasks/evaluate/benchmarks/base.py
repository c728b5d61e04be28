"""Shared parts of the benchmarks: the ``Item`` every benchmark yields, the ``Benchmark`` protocol,
the request a benchmark answers, speaking texts with espeak, and reading question records.

A benchmark is a class with a ``name``, a ``scoring`` rule (a key of ``tasks.evaluate.metric.SCORERS``;
AudioBench's math rule by default) and ``items(request) -> {split: [Item, ...]}``. Register it with one
line in ``tasks/evaluate/benchmarks/__init__.py`` (``BENCHMARKS``) or ``register(name, cls)``;
``evaluate.benchmark`` in params.yaml then names it (``name`` or ``name:argument``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("evaluate")
from typing import ClassVar, Protocol, runtime_checkable


HUB_ID = "amao0o0/spoken-mqa"
SPLITS = ("short_digit", "long_digit", "single_step_reasoning", "multi_step_reasoning")
EXTRA_SPLITS = ("gsm8k", "svamp")
FIELDS = ("context", "context_transcript", "instruction", "answer")
SAMPLE_RATE = 16000
AUDIOBENCH_SUBSET_SEED = 42  # spokenmqa_dataset_*: raw_data.shuffle(seed=42).select(range(n))
# Our instruction (the real dataset's own sentence was not available offline): zero-shot CoT ending in
# the trigger AudioBench's scorer looks for.
INSTRUCTION = 'Solve the spoken math problem step by step, and end with "The answer is" followed by the number.'
# Proxy split -> built-in generator kind.
PROXY_KINDS = {"short_digit": "short_digit", "long_digit": "long_digit",
               "single_step_reasoning": "single_step", "multi_step_reasoning": "multi_step"}
# Training draws problems from seed synthesize.seed (+ the source's index) and the tokenizer corpus from
# 10_000 + seed, all small numbers. Proxy seeds start at 2**40, so they could meet a training seed
# only if params.yaml set a seed above a trillion; the question filter below is the guarantee anyway.
PROXY_SEED_BASE = 2**40
MAX_PROXY_SEED = 10**9
DEFAULT_VOICES = ("en-us", "en-us+m3", "en-us+f3", "en-gb-x-rp", "en-us+f2", "en-us+m7")
PROGRESS_EVERY_S = 5.0


class BenchmarkError(ValueError):
    """A benchmark cannot be read or made; the message names the source, split, row and the fix."""


@dataclass(frozen=True, eq=False)
class Item:
    """One spoken question. ``id`` is ``<split>-<row>`` (row in the split as stored) unless the file
    has an ``id`` column; ``answer`` is the gold as AudioBench compares it (the first entry when the
    dataset gives a list): score with ``metric.is_correct(output, item.answer, item.split)``."""

    id: str
    split: str
    transcript: str  # context_transcript: the spoken question as text
    instruction: str
    answer: str
    audio: np.ndarray = field(repr=False)  # (samples,) float32 mono in [-1, 1]
    sample_rate: int
    scoring: str = "audiobench_math"  # tasks.evaluate.metric.SCORERS key: how an answer to it is scored

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


class _Progress:
    """Logs ``what: done/total`` at most every PROGRESS_EVERY_S seconds, and once at the end."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.t0 = what, total, time.monotonic()
        self.last = self.t0
        self.audio_s = 0.0

    def step(self, done: int, audio_s: float = 0.0) -> None:
        self.audio_s += audio_s
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S or done == self.total:
            self.last = now
            audio = f", {self.audio_s:.0f} s of audio" if self.audio_s else ""
            log.info("%s: %d/%d (%.1f s elapsed%s)", self.what, done, self.total, now - self.t0, audio)


@dataclass(frozen=True)
class Request:
    """What the evaluate stage asks of a benchmark: ``argument`` is the text after ``name:`` in
    ``evaluate.benchmark`` (a path, a hub id), ``training`` the synthesized data to keep questions apart from."""

    argument: str = ""
    splits: Sequence[str] = SPLITS
    limit_per_split: int = 0
    seed: int = 0
    training: Iterable[str] | str | Path | None = None


@runtime_checkable
class Benchmark(Protocol):
    """One benchmark: yields spoken items per split; ``scoring`` names how an answer is scored."""

    name: ClassVar[str]
    scoring: ClassVar[str]

    def items(self, request: Request) -> dict[str, list[Item]]: ...


def by_split(items: Iterable[Item], splits: Sequence[str]) -> dict[str, list[Item]]:
    """``{split: [Item]}`` in the order of ``splits`` (items of other splits are an error)."""
    out: dict[str, list[Item]] = {s: [] for s in splits}
    for it in items:
        if it.split not in out:
            raise BenchmarkError(f"item {it.id} has split {it.split!r}, not one of evaluate.splits {list(splits)}")
        out[it.split].append(it)
    return out


# --- the proxy -------------------------------------------------------------------------------------
def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def load_training_questions(source: Iterable[str] | str | Path) -> list[str]:
    """Questions of a training set: a list of strings, or the synthesize stage's output directory
    (``train.parquet`` and ``validation.parquet`` with column ``question``; ``spoken_question`` too if
    present) or one such parquet file."""
    import pyarrow.parquet as pq

    if not isinstance(source, (str, Path)):
        qs = list(source)
        bad = [q for q in qs if not isinstance(q, str)]
        if bad:
            raise BenchmarkError(f"training questions must be strings, got {type(bad[0]).__name__} {bad[0]!r:.60}")
        return qs
    out: list[str] = []
    for f, cols in _training_files(Path(source).expanduser()):
        for col in pq.read_table(f, columns=cols).to_pydict().values():
            out.extend(q for q in col if isinstance(q, str) and q)
    return out


def _training_files(p: Path) -> list[tuple[Path, list[str]]]:
    """The parquet files of a training set, each with the question columns it has (``question``, and
    ``spoken_question`` when present): synthesize's output directory (train, validation and the text-only
    pool ``text.parquet``, which text_tis trains on too) or one file; each must have ``question``."""
    import pyarrow.parquet as pq

    files = [f for f in (p / "train.parquet", p / "validation.parquet", p / "text.parquet") if f.is_file()] \
        if p.is_dir() else [p]
    if not files or not files[0].is_file():
        raise BenchmarkError(
            f"training set {p} not found: give the synthesize stage's output (data/synthesize with "
            "train.parquet/validation.parquet) or a list of training questions"
        )
    out = []
    for f in files:
        names = pq.read_schema(f).names
        if "question" not in names:
            raise BenchmarkError(f"{f} has no 'question' column (it has {names}); is it a synthesize output?")
        out.append((f, [c for c in ("question", "spoken_question") if c in names]))
    return out


def training_keys(source: Iterable[str] | str | Path) -> set[str]:
    """What a held-out question must not match (``_key`` form): every training question and its spoken form.

    For the synthesize stage's output (or a parquet file) the spoken form is the row's ``spoken_question``,
    which synthesize wrote as ``speakable(question)``; a row without one gets ``speakable`` here. A list of
    questions gets ``speakable`` of each. (Recomputing ``speakable`` for the ~40,000 stored strings of the
    default dataset took 20 s of every evaluation; the keys are the same.)"""
    import pyarrow.parquet as pq

    from tasks.synth.verbalize import speakable

    if not isinstance(source, (str, Path)):
        qs = load_training_questions(source)
        return {_key(q) for q in qs} | {_key(speakable(q)) for q in qs}
    keys: set[str] = set()
    for f, names in _training_files(Path(source).expanduser()):
        cols = pq.read_table(f, columns=names).to_pydict()
        spoken = cols.get("spoken_question") or [None] * len(cols["question"])
        for q, s in zip(cols["question"], spoken):
            if isinstance(q, str) and q:
                keys.add(_key(q))
                keys.add(_key(s if isinstance(s, str) and s else speakable(q)))
            elif isinstance(s, str) and s:
                keys.add(_key(s))
    return keys


def _speak(texts: list[tuple[str, str, str, str]], voices: Sequence[str], rate: tuple[int, int],
           pitch: tuple[int, int], seed: int, what: str) -> list[Item]:
    """[(id, split, spoken text, answer)] -> Items with TTS audio; one voice/rate/pitch per item,
    reproducible from (seed, id)."""
    from models.tts import make_tts

    if not voices:
        raise BenchmarkError("voices is empty; list at least one espeak voice, e.g. ['en-us']")
    tts: dict[tuple[str, int, int], object] = {}
    items = []
    progress = _Progress(f"{what}: speaking questions", len(texts))
    for k, (iid, split, spoken, answer) in enumerate(texts):
        rng = random.Random(f"{seed}/{iid}")
        voice = (rng.choice(list(voices)), rng.randint(*rate), rng.randint(*pitch))
        if voice not in tts:
            tts[voice] = make_tts("espeak", voice=voice[0], rate=voice[1], pitch=voice[2])
        wav, sr = tts[voice].synthesize(spoken)  # type: ignore[attr-defined]
        items.append(Item(iid, split, spoken, INSTRUCTION, answer, wav.astype(np.float32, copy=False), sr))
        progress.step(k + 1, len(wav) / sr)
    return items


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        raise BenchmarkError(f"{path} not found; give a GSM8K .jsonl or SVAMP .json file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            recs = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{path} is not valid JSON ({e})") from e
    else:
        recs = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BenchmarkError(f"{path} line {n} is not valid JSON ({e})") from e
    if not all(isinstance(r, dict) for r in recs):
        raise BenchmarkError(f"{path} must hold JSON objects (one record each)")
    return recs


def speak_records(kind: str, parse, path: str | Path, limit: int = 0, *,
               training: Iterable[str] | str | Path | None = None, seed: int = 0,
               voices: Sequence[str] = DEFAULT_VOICES, rate: tuple[int, int] = (150, 190),
               pitch: tuple[int, int] = (35, 65)) -> list[Item]:
    """Records of a JSON/JSONL file as split ``kind``: ``parse(record) -> (question, gold)`` (ValueError
    for a malformed record), the question made speakable and spoken like training. The first
    ``limit`` usable records (0 = all); records in ``training`` are dropped; a malformed record is an
    error naming it."""
    from tasks.synth.verbalize import speakable

    if limit < 0:
        raise BenchmarkError(f"limit must be >= 0 (0 = all), got {limit}")
    p = Path(path).expanduser()
    seen = training_keys(training) if training is not None else set()
    texts, dropped = [], 0
    for n, rec in enumerate(_records(p)):
        try:
            question, answer = parse(rec)
        except ValueError as e:
            raise BenchmarkError(f"{p} record {n}: {e}") from e
        spoken = speakable(question)
        if {_key(question), _key(spoken)} & seen:
            dropped += 1
            continue
        texts.append((f"{kind}-{n}", kind, spoken, answer))
        if limit and len(texts) == limit:
            break
    if not texts:
        raise BenchmarkError(f"{p} gave no {kind} questions (all {dropped} were in the training set?)")
    log.info("%s: %d questions from %s (%d dropped as in training)", kind, len(texts), p, dropped)
    return _speak(texts, voices, rate, pitch, seed, kind)

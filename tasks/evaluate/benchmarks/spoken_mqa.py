"""Spoken-MQA (Hugging Face ``amao0o0/spoken-mqa``) from a hub id or a local copy, and the writer of
benchmarks in its published schema.

Everything is read and written in Spoken-MQA's published schema (Hugging Face ``amao0o0/spoken-mqa``,
config ``default``): one split per category, ``short_digit``, ``long_digit``,
``single_step_reasoning``, ``multi_step_reasoning``; per row ``context`` (audio),
``context_transcript`` (the spoken question as text), ``instruction`` (``{"text": ...}``, the same
sentence for every row) and ``answer`` (``{"text": ...}``, a string or a list of strings).

``load_benchmark(source, splits, limit_per_split)`` reads
  - a hub id (``amao0o0/spoken-mqa``; needs a network or the Hugging Face cache),
  - a local copy: a hub snapshot (``data/<split>-00000-of-0000N.parquet``), a ``save_to_disk``
    directory (``<split>/data-*.arrow``), the hub's parquet conversion (``default/<split>/0000.parquet``),
    parquet files named by split (``short_digit.parquet``), or one such file,
  - our proxy (or GSM8K / SVAMP splits) written by ``write_benchmark`` — the hub snapshot layout.
With ``limit_per_split`` it takes the subset AudioBench takes for ``number_of_samples``
(``shuffle(seed=42).select(range(n))``), so numbers on a subset compare with AudioBench's.

The offline proxy (proxy.py) and GSM8K / SVAMP (gsm8k.py, svamp.py) are written in this schema by
``write_benchmark`` (``python -m tasks.evaluate.benchmarks proxy OUT_DIR``).

    python -m tasks.evaluate.benchmarks show OUT_DIR            # or a hub id / local copy
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("evaluate")

from tasks.evaluate.benchmarks.base import (AUDIOBENCH_SUBSET_SEED, FIELDS, HUB_ID, SAMPLE_RATE, SPLITS,
                                            BenchmarkError, Item, Request, _Progress)

# --- reading ---------------------------------------------------------------------------------------
def audiobench_subset(n_rows: int, limit: int) -> np.ndarray:
    """Row indices of the subset AudioBench evaluates for ``number_of_samples=limit``:
    ``Dataset.shuffle(seed=42)`` is ``np.random.default_rng(42).permutation``; 0 = every row in order.
    A limit above the split's size takes the whole split (shuffled), where AudioBench would fail."""
    if limit <= 0:
        return np.arange(n_rows)
    return np.random.default_rng(AUDIOBENCH_SUBSET_SEED).permutation(n_rows)[: min(limit, n_rows)]


def _is_hub_id(source: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source)) and not source.startswith((".", "~", "/"))


def _split_of(f: Path, root: Path) -> str:
    """Split name of a data file: ``short_digit-00000-of-00001.parquet`` (hub), ``short_digit.parquet``,
    ``short_digit/data-00000-of-00001.arrow`` (save_to_disk), ``default/short_digit/0000.parquet``
    (the hub's parquet conversion)."""
    stem = f.name.split(".")[0]
    m = re.fullmatch(r"(.+?)-\d{5}-of-\d{5}", stem)
    name = m.group(1) if m else stem
    if (name == "data" or name.isdigit()) and f.parent != root:
        name = f.parent.name
    return name


def _read_file(f: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if f.suffix == ".parquet":
            return pq.read_table(f)
        with pa.OSFile(str(f)) as src:  # save_to_disk writes the Arrow stream format, others the file format
            try:
                return pa.ipc.open_stream(src).read_all()
            except pa.ArrowInvalid:
                src.seek(0)
                return pa.ipc.open_file(src).read_all()
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise BenchmarkError(f"cannot read {f} ({type(e).__name__}: {e}); is it a complete parquet/arrow file?") from e


def _local_tables(path: Path, splits: Sequence[str]) -> dict:
    import pyarrow as pa

    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix in (".parquet", ".arrow") and f.is_file()
                       and not any(p.startswith(".") for p in f.relative_to(path).parts))
        if not files:
            raise BenchmarkError(
                f"{path} holds no .parquet or .arrow files; point it at a Spoken-MQA copy (hub snapshot, "
                "save_to_disk directory or parquet per split) or a directory written by write_benchmark"
            )
        root = path
    elif path.suffix in (".parquet", ".arrow"):
        files, root = [path], path.parent
    else:
        raise BenchmarkError(f"{path}: unsupported file type {path.suffix!r}; "
                             "use a .parquet/.arrow file or a directory")
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(_split_of(f, root), []).append(f)
    missing = [s for s in splits if s not in by_split]
    if missing:
        raise BenchmarkError(f"{path} has no split(s) {missing}; it holds {sorted(by_split)}")
    tables = {}
    for s in splits:
        parts = [_read_file(f) for f in by_split[s]]
        try:
            tables[s] = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        except pa.ArrowInvalid as e:
            raise BenchmarkError(f"{path} split {s!r}: its files {by_split[s]} have different columns ({e})") from e
    return tables


def _hub_tables(hub_id: str, splits: Sequence[str]) -> dict:
    import datasets

    tables = {}
    for s in splits:
        try:
            ds = datasets.load_dataset(hub_id, split=s)
        except ValueError as e:
            if "split" in str(e).lower():
                raise BenchmarkError(f"{hub_id} has no split {s!r} ({e})") from e
            raise BenchmarkError(f"cannot load {hub_id!r} split {s!r} ({type(e).__name__}: {e})") from e
        except Exception as e:  # noqa: BLE001 - no network surfaces as several exception types
            raise BenchmarkError(
                f"cannot load {hub_id!r} split {s!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
                f"Without a network: download it where there is one (`hf download {hub_id} --repo-type dataset "
                "--local-dir DIR`) and pass DIR, or evaluate on the offline proxy (make_proxy / write_benchmark)"
            ) from e
        # Arrow view: the raw audio struct {bytes, path}, never decoded by datasets (that needs torchcodec).
        tables[s] = ds.with_format("arrow")[:]
    return tables


def _decode_audio(ctx: object, where: str, base: Path | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    from models.wave import as_mono

    if not isinstance(ctx, dict):
        raise BenchmarkError(f"{where}: field 'context' must be audio ({{bytes, path}} or {{array, sampling_rate}}), "
                             f"got {type(ctx).__name__}")
    if ctx.get("array") is not None:
        sr = ctx.get("sampling_rate")
        if not isinstance(sr, int) or sr <= 0:
            raise BenchmarkError(f"{where}: context.sampling_rate must be a positive integer, got {sr!r}")
        return as_mono(np.asarray(ctx["array"], dtype=np.float32)), sr
    data = ctx.get("bytes")
    try:
        if isinstance(data, (bytes, bytearray)) and data:
            wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        elif isinstance(ctx.get("path"), str) and ctx["path"]:
            p = Path(ctx["path"])
            if not p.is_absolute() and base is not None:
                p = base / p
            if not p.is_file():
                raise BenchmarkError(f"{where}: context has no audio bytes and its path {p} does not exist")
            wav, sr = sf.read(str(p), dtype="float32", always_2d=False)
        else:
            raise BenchmarkError(f"{where}: context holds no audio (neither bytes, path nor array)")
    except BenchmarkError:
        raise
    except Exception as e:  # noqa: BLE001 - soundfile raises LibsndfileError/RuntimeError/TypeError
        raise BenchmarkError(f"{where}: context audio cannot be decoded ({type(e).__name__}: {e})") from e
    return as_mono(wav), int(sr)


def _text_of(value: object, name: str, where: str, allow_list: bool = False) -> str | list[str]:
    """``instruction``/``answer`` are ``{"text": ...}`` structs in the published schema."""
    kind = "a string or a list of strings" if allow_list else "a string"
    if not isinstance(value, dict) or "text" not in value:
        raise BenchmarkError(f"{where}: field {name!r} must be a struct with 'text' ({kind}), got {value!r:.80}")
    text = value["text"]
    if isinstance(text, str) and text.strip():
        return text
    if allow_list and isinstance(text, list) and text and all(isinstance(t, str) and t.strip() for t in text):
        return text
    raise BenchmarkError(f"{where}: {name}.text must be {kind}, non-empty; got {text!r:.80}")


def _items_of(table, split: str, rows: np.ndarray, origin: str, sample_rate: int | None,
              base: Path | None) -> list[Item]:
    from models.wave import resample
    from tasks.evaluate.metric import ARITHMETIC_SPLITS, normalize_answer

    missing = [c for c in FIELDS if c not in table.column_names]
    if missing:
        raise BenchmarkError(
            f"{origin} split {split!r} lacks field(s) {missing}; a Spoken-MQA split has {list(FIELDS)} "
            f"(it has {table.column_names})"
        )
    if table.num_rows == 0:
        raise BenchmarkError(f"{origin} split {split!r} is empty")
    cols = [c for c in (*FIELDS, "id") if c in table.column_names]
    sub = table.select(cols).take(rows)
    progress = _Progress(f"{origin} {split}: decoding audio", len(rows))
    items = []
    for k, (row_idx, rec) in enumerate(zip(rows.tolist(), sub.to_pylist())):
        where = f"{origin} split {split!r} row {row_idx}"
        transcript = rec["context_transcript"]
        if not isinstance(transcript, str) or not transcript.strip():
            raise BenchmarkError(f"{where}: context_transcript must be a non-empty string, got {transcript!r:.80}")
        instruction = _text_of(rec["instruction"], "instruction", where)
        golds = _text_of(rec["answer"], "answer", where, allow_list=True)
        gold = golds if isinstance(golds, str) else golds[0]
        if split not in ARITHMETIC_SPLITS:
            try:
                normalize_answer(gold)
            except ValueError as e:
                raise BenchmarkError(f"{where}: {e}") from e
        wav, sr = _decode_audio(rec["context"], where, base)
        if wav.size == 0:
            raise BenchmarkError(f"{where}: context audio is empty")
        if sample_rate and sr != sample_rate:
            wav, sr = resample(wav, sr, sample_rate), sample_rate
        rid = rec.get("id") or f"{split}-{row_idx}"
        items.append(Item(str(rid), split, transcript.strip(), str(instruction), gold.strip(), wav, sr))
        progress.step(k + 1, len(wav) / sr)
    return items


def load_benchmark(source: str | Path, splits: Sequence[str] = SPLITS, limit_per_split: int = 0, *,
                   sample_rate: int | None = SAMPLE_RATE) -> dict[str, list[Item]]:
    """``{split: [Item, ...]}`` in the order of ``splits``, from a hub id or a local copy (module doc).

    ``limit_per_split`` > 0 takes AudioBench's subset of that size (``shuffle(seed=42)``); audio is
    resampled to ``sample_rate`` (None keeps each file's rate).
    """
    if isinstance(splits, str) or not splits:
        raise BenchmarkError(f"splits must be a non-empty list of split names, got {splits!r}; e.g. {list(SPLITS)}")
    if len(set(splits)) != len(splits):
        raise BenchmarkError(f"splits {list(splits)} name a split twice")
    if limit_per_split < 0:
        raise BenchmarkError(f"limit_per_split must be >= 0 (0 = all), got {limit_per_split}")
    src = str(source)
    path = Path(src).expanduser()
    # "data/benchmark" also looks like a hub id: a str whose first part is a local folder is a path.
    local = isinstance(source, Path) or path.parent.is_dir() and str(path.parent) != "."
    if path.exists():
        tables, origin, base = _local_tables(path, splits), str(path), (path if path.is_dir() else path.parent)
    elif _is_hub_id(src) and path.suffix not in (".parquet", ".arrow", ".json", ".jsonl") and not local:
        tables, origin, base = _hub_tables(src, splits), src, None
    else:
        raise BenchmarkError(f"benchmark source {src!r} not found: give an existing directory/file or a hub id "
                             f"like {HUB_ID!r}")
    out = {}
    for s in splits:
        table = tables[s]
        rows = audiobench_subset(table.num_rows, limit_per_split)
        out[s] = _items_of(table, s, rows, origin, sample_rate, base)
        log.info("benchmark %s: split %s, %d of %d items", origin, s, len(out[s]), table.num_rows)
    return out


# --- writing ---------------------------------------------------------------------------------------
def _features() -> dict:
    """The ``datasets`` features of our files (stored in the parquet schema metadata, as the hub's)."""
    return {
        "id": {"dtype": "string", "_type": "Value"},
        "context": {"sampling_rate": SAMPLE_RATE, "_type": "Audio"},
        "context_transcript": {"dtype": "string", "_type": "Value"},
        "instruction": {"audio": {"_type": "Audio"}, "text": {"dtype": "string", "_type": "Value"}},
        "answer": {"text": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"}},
    }


def _schema():
    import pyarrow as pa

    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.schema(
        [("id", pa.string()), ("context", audio), ("context_transcript", pa.string()),
         ("instruction", pa.struct([("audio", audio), ("text", pa.string())])),
         ("answer", pa.struct([("text", pa.list_(pa.string()))]))],
        metadata={"huggingface": json.dumps({"info": {"features": _features()}})},
    )


def _flac(wav: np.ndarray, sr: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_benchmark(items: Iterable[Item], out_dir: str | Path, meta: dict | None = None) -> Path:
    """Write items in the published schema as a hub snapshot: ``out_dir/data/<split>-00000-of-00001.parquet``
    (audio as 16-bit FLAC bytes; ``answer.text`` a one-entry list, as the reasoning splits need for
    AudioBench's scorer; plus an ``id`` column), which ``datasets.load_dataset(out_dir)`` reads as the
    hub's, a README.md, and ``meta`` as ``benchmark.json``. Atomic:
    ``out_dir`` is replaced whole, or left as it was on error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.atomic import atomic_dir

    by_split: dict[str, list[Item]] = {}
    for it in items:
        by_split.setdefault(it.split, []).append(it)
    if not by_split:
        raise BenchmarkError("write_benchmark got no items; make some with make_proxy or make_extra first")
    for s, its in by_split.items():
        if not re.fullmatch(r"\w+", s):
            raise BenchmarkError(f"split name {s!r} must be letters, digits and '_' (it names a file)")
        ids = [it.id for it in its]
        if len(set(ids)) != len(ids):
            raise BenchmarkError(f"split {s!r} has duplicate item ids; ids must be unique per split")
    schema = _schema()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "data").mkdir()
        for s, its in by_split.items():
            progress = _Progress(f"write {s}", len(its))
            rows: dict[str, list] = {k: [] for k in schema.names}
            for k, it in enumerate(its):
                rows["id"].append(it.id)
                rows["context"].append({"bytes": _flac(it.audio, it.sample_rate), "path": None})
                rows["context_transcript"].append(it.transcript)
                rows["instruction"].append({"audio": None, "text": it.instruction})
                rows["answer"].append({"text": [it.answer]})
                progress.step(k + 1)
            pq.write_table(pa.Table.from_pydict(rows, schema=schema), tmp / "data" / f"{s}-00000-of-00001.parquet")
        # No YAML `configs` header: with one, datasets caches load_dataset(dir) by the header alone and
        # serves the old rows after the folder is rewritten; without, it finds the splits from the file
        # names (data/<split>-00000-of-00001.parquet) and notices new files.
        (tmp / "README.md").write_text(
            "Spoken math questions in Spoken-MQA's schema (context, context_transcript, instruction, answer),\n"
            "written by tasks/evaluate/benchmarks/. Load with `load_benchmark(dir)` or\n"
            "`datasets.load_dataset(dir)`.\n"
        )
        info = {"splits": {s: len(its) for s, its in by_split.items()}, **(meta or {})}
        (tmp / "benchmark.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    log.info("wrote benchmark %s: %s", out_dir, {s: len(v) for s, v in by_split.items()})
    return out_dir


class SpokenMQA:
    """``spoken_mqa:<hub id or local copy>`` (a bare hub id or path means the same)."""

    name = "spoken_mqa"
    scoring = "audiobench_math"

    def items(self, request: Request) -> dict[str, list[Item]]:
        return load_benchmark(request.argument or HUB_ID, request.splits, request.limit_per_split)

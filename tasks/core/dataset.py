"""The sample dataset every data stage writes and every training stage reads.

A dataset is a directory with ``train.parquet`` and ``validation.parquet`` (load it with
``datasets.load_dataset("parquet", data_files=...)`` or ``load_samples``), optional audio files
referenced by relative path, and ``stats.json``. Columns (``COLUMNS``):

- text: id, source, kind, question, spoken_question, reasoning, response, answer
- tokens: question_ids, response_ids, reasoning_ids (plain text ids), min_block (earliest block of
  each response token, from ``models.drift``)
- audio: question_audio, response_audio (paths relative to the dataset dir, "" when absent),
  question_seconds, response_seconds, response_starts (second at which each response token starts in
  its speech, from the TTS's word times, ``tasks.synth.timing``; [] where unknown), voice and
  response_voice (who said the question and the response, ``name@RATEwpm/pPITCH``; "" when unknown)
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from models.atomic import atomic_dir, write_json, write_with

TEXT_COLUMNS = ["id", "source", "kind", "question", "spoken_question", "reasoning", "response", "answer"]
TOKEN_COLUMNS = ["question_ids", "response_ids", "reasoning_ids", "min_block"]
AUDIO_COLUMNS = ["question_audio", "response_audio", "question_seconds", "response_seconds", "response_starts",
                 "voice", "response_voice"]
COLUMNS = TEXT_COLUMNS + TOKEN_COLUMNS + AUDIO_COLUMNS
SPLITS = ("train", "validation")


def _schema():
    import pyarrow as pa

    fields = [(c, pa.string()) for c in TEXT_COLUMNS]
    fields += [(c, pa.list_(pa.int32())) for c in TOKEN_COLUMNS]
    fields += [("question_audio", pa.string()), ("response_audio", pa.string())]
    fields += [("question_seconds", pa.float32()), ("response_seconds", pa.float32())]
    fields += [("response_starts", pa.list_(pa.float32()))]
    fields += [("voice", pa.string()), ("response_voice", pa.string())]
    return pa.schema(fields)


def complete(row: dict[str, Any]) -> dict[str, Any]:
    """Fill absent audio columns; reject rows missing text or token columns."""
    missing = [c for c in TEXT_COLUMNS + TOKEN_COLUMNS if c not in row]
    if missing:
        raise KeyError(f"sample {row.get('id', '?')} lacks columns {missing}")
    out = {c: row.get(c) for c in COLUMNS}
    for c in ("question_audio", "response_audio", "voice", "response_voice"):
        out[c] = out[c] or ""
    for c in ("question_seconds", "response_seconds"):
        out[c] = float(out[c] or 0.0)
    out["response_starts"] = [float(x) for x in (out["response_starts"] if out["response_starts"] is not None else [])]
    return out


ROW_GROUP = 1024  # rows per parquet row group: readers stream a dataset in bounded memory


def write_dataset(out_dir: str | Path, splits: dict[str, Iterable[dict]], stats: dict, extra_dir: Path | None = None) -> None:
    """Write splits + stats.json to ``out_dir`` atomically (build in a temp dir, then rename).

    ``extra_dir``: an already-written directory (e.g. audio/) moved into the dataset as is.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_dir(out_dir) as tmp:
        for name, rows in splits.items():
            table = pa.Table.from_pylist([complete(r) for r in rows], schema=_schema())
            pq.write_table(table, tmp / f"{name}.parquet", row_group_size=ROW_GROUP)
        if extra_dir is not None:
            shutil.move(str(extra_dir), tmp / Path(extra_dir).name)
        write_json(tmp / "stats.json", stats)


def load_samples(data_dir: str | Path, split: str, columns: list[str] | None = None) -> list[dict]:
    """The rows of ``split`` as dicts; ``columns`` reads only those (not the audio of every row)."""
    import pyarrow.parquet as pq

    path = Path(data_dir) / f"{split}.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; run the data stage that writes {data_dir} first (`dvc repro`)"
        )
    if columns is not None:
        missing = sorted(set(columns) - set(pq.read_schema(path).names))
        if missing:
            raise ValueError(f"{path} has no column(s) {missing}; rerun the stage that writes {data_dir} (`dvc repro`)")
    return pq.read_table(path, columns=columns).to_pylist()


def hf_dataset(data_dir: str | Path):
    """The same data as a Hugging Face ``DatasetDict``."""
    from datasets import load_dataset

    d = Path(data_dir)
    return load_dataset("parquet", data_files={s: str(d / f"{s}.parquet") for s in SPLITS})


def cache_dir() -> Path:
    """Where derived, re-creatable files go (``OMNI_TIS_CACHE``, else ``~/.cache/omni-tis``)."""
    return Path(os.environ.get("OMNI_TIS_CACHE") or Path.home() / ".cache" / "omni-tis")


_ROOT = Path(__file__).resolve().parents[2]


def _convert(parquet: str | Path, arrow: str | Path, columns: list[str] | None) -> None:
    """Parquet -> uncompressed Arrow IPC file of ``RowStore.BATCH``-row record batches (atomic)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(tmp: Path) -> None:
        pf = pq.ParquetFile(parquet, pre_buffer=False)
        schema = pf.schema_arrow if columns is None else pa.schema([pf.schema_arrow.field(c) for c in columns])
        schema = schema.with_metadata({"rows": str(pf.metadata.num_rows)})
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
            for b in pf.iter_batches(batch_size=RowStore.BATCH, columns=columns):
                w.write_batch(pa.RecordBatch.from_arrays(b.columns, schema=schema))

    write_with(Path(arrow), write)


class RowStore:
    """Random access to the rows of a parquet file without holding it in memory.

    The first use converts the file to an uncompressed Arrow IPC file of small record batches in
    ``cache_dir()`` (keyed by the parquet's path, size and mtime; written atomically, so ranks may race
    safely); a row read is then one small positioned read of its batch. Memory stays flat whatever the
    number of rows: nothing but the file handle and the batch offsets is kept.

        store = RowStore(data_dir / "train.parquet", columns=["question", "response_ids"])
        len(store); store[17]  # -> dict
    """

    BATCH = 64

    def __init__(self, parquet: str | Path, columns: list[str] | None = None):
        import pyarrow as pa

        self.path = Path(parquet)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} not found; run the data stage that writes it first (`dvc repro`)")
        self.columns = columns
        st = self.path.stat()
        key = hashlib.sha256(f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{columns}".encode()).hexdigest()[:24]
        self.arrow = cache_dir() / "rows" / f"{self.path.stem}-{key}.arrow"
        if not self.arrow.exists():
            # In a child process: Arrow's allocator keeps what reading parquet took, and the trainer's
            # memory must not grow with the dataset.
            import json
            import subprocess
            import sys

            code = "import json, sys; from tasks.core.dataset import _convert; _convert(*sys.argv[1:3], json.loads(sys.argv[3]))"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])}
            r = subprocess.run([sys.executable, "-c", code, str(self.path), str(self.arrow), json.dumps(columns)],
                               env=env, capture_output=True, text=True)
            if r.returncode != 0 or not self.arrow.exists():
                raise RuntimeError(f"could not convert {self.path} for random access (exit {r.returncode}); is it a "
                                   f"parquet file with columns {columns}?\n{r.stderr[-2000:]}")
        self._reader = pa.ipc.open_file(pa.OSFile(str(self.arrow)))
        self._n = int((self._reader.schema.metadata or {}).get(b"rows", b"0"))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self._n:
            raise IndexError(f"row {i} out of range for {self._n} rows of {self.path}")
        b = self._reader.get_batch(i // self.BATCH).slice(i % self.BATCH, 1)
        return {k: v[0] for k, v in b.to_pydict().items()}

    def column(self, name: str) -> list:
        """One whole column (small columns only: it is read into memory)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path, columns=[name]).column(name).to_pylist()

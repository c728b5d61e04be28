"""The sample dataset every data stage writes and every training stage reads.

A dataset is a directory with ``train.parquet`` and ``validation.parquet`` (load it with
``datasets.load_dataset("parquet", data_files=...)`` or ``load_samples``), optional audio files
referenced by relative path, and ``stats.json``. Columns (``COLUMNS``):

- text: id, source, kind, question, spoken_question, reasoning, response, answer
- tokens: question_ids, response_ids, reasoning_ids (plain text ids), min_block (earliest block of
  each response token, from ``models.drift``)
- audio: question_audio, response_audio (paths relative to the dataset dir, "" when absent),
  question_seconds, response_seconds
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

TEXT_COLUMNS = ["id", "source", "kind", "question", "spoken_question", "reasoning", "response", "answer"]
TOKEN_COLUMNS = ["question_ids", "response_ids", "reasoning_ids", "min_block"]
AUDIO_COLUMNS = ["question_audio", "response_audio", "question_seconds", "response_seconds"]
COLUMNS = TEXT_COLUMNS + TOKEN_COLUMNS + AUDIO_COLUMNS
SPLITS = ("train", "validation")


def _schema():
    import pyarrow as pa

    fields = [(c, pa.string()) for c in TEXT_COLUMNS]
    fields += [(c, pa.list_(pa.int32())) for c in TOKEN_COLUMNS]
    fields += [("question_audio", pa.string()), ("response_audio", pa.string())]
    fields += [("question_seconds", pa.float32()), ("response_seconds", pa.float32())]
    return pa.schema(fields)


def complete(row: dict[str, Any]) -> dict[str, Any]:
    """Fill absent audio columns; reject rows missing text or token columns."""
    missing = [c for c in TEXT_COLUMNS + TOKEN_COLUMNS if c not in row]
    if missing:
        raise KeyError(f"sample {row.get('id', '?')} lacks columns {missing}")
    out = {c: row.get(c) for c in COLUMNS}
    for c in ("question_audio", "response_audio"):
        out[c] = out[c] or ""
    for c in ("question_seconds", "response_seconds"):
        out[c] = float(out[c] or 0.0)
    return out


def write_dataset(out_dir: str | Path, splits: dict[str, Iterable[dict]], stats: dict, extra_dir: Path | None = None) -> None:
    """Write splits + stats.json to ``out_dir`` atomically (build in a temp dir, then rename).

    ``extra_dir``: an already-written directory (e.g. audio/) moved into the dataset as is.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, rows in splits.items():
            table = pa.Table.from_pylist([complete(r) for r in rows], schema=_schema())
            pq.write_table(table, tmp / f"{name}.parquet")
        if extra_dir is not None:
            shutil.move(str(extra_dir), tmp / Path(extra_dir).name)
        with open(tmp / "stats.json", "w") as f:
            json.dump(stats, f, indent=2, sort_keys=True)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Put directory ``src`` at ``dst``; an existing ``dst`` is swapped out, then deleted."""
    os.chmod(src, 0o755)  # mkdtemp makes 0700 dirs
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_samples(data_dir: str | Path, split: str) -> list[dict]:
    import pyarrow.parquet as pq

    path = Path(data_dir) / f"{split}.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; run the data stage that writes {data_dir} first (`dvc repro`)"
        )
    return pq.read_table(path).to_pylist()


def hf_dataset(data_dir: str | Path):
    """The same data as a Hugging Face ``DatasetDict``."""
    from datasets import load_dataset

    d = Path(data_dir)
    return load_dataset("parquet", data_files={s: str(d / f"{s}.parquet") for s in SPLITS})

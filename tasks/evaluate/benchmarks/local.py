"""A user's own question set: a local ``.jsonl``/``.json``/``.parquet`` file with named fields.

``evaluate.benchmark: local:PATH?question=FIELD&answer=FIELD[&split=FIELD][&id=FIELD]`` (defaults
``question``, ``answer``; without a split field every record is in the first of ``evaluate.splits``).
A question is spoken like training (``speakable`` + espeak); the gold is normalized as AudioBench reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

from tasks.evaluate.benchmarks.base import (DEFAULT_VOICES, BenchmarkError, Item, Request, _key, _records, _speak,
                                            by_split, load_training_questions)

FIELDS = ("question", "answer", "split", "id")


def parse_argument(argument: str) -> tuple[Path, dict[str, str]]:
    """'data/mine.jsonl?question=q&answer=a' -> (path, {'question': 'q', 'answer': 'a'})."""
    path, _, query = argument.partition("?")
    fields = {"question": "question", "answer": "answer"}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k not in FIELDS or not v:
            raise BenchmarkError(f"local benchmark: unknown or empty field option {k!r}={v!r}; use {', '.join(FIELDS)}")
        fields[k] = v
    if not path:
        raise BenchmarkError("local benchmark needs a file: 'local:PATH?question=FIELD&answer=FIELD'")
    return Path(path).expanduser(), fields


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        if not path.is_file():
            raise BenchmarkError(f"{path} not found; give a .jsonl, .json or .parquet file")
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return _records(path)


class Local:
    name = "local"
    scoring = "audiobench_math"

    def items(self, request: Request) -> dict[str, list[Item]]:
        from tasks.evaluate.metric import normalize_answer
        from tasks.synth.verbalize import speakable

        path, f = parse_argument(request.argument)
        seen = {_key(q) for q in load_training_questions(request.training)} if request.training is not None else set()
        texts, per_split = [], {s: 0 for s in request.splits}
        for n, rec in enumerate(_rows(path)):
            q, a = rec.get(f["question"]), rec.get(f["answer"])
            if not isinstance(q, str) or not q.strip() or a is None or isinstance(a, bool):
                raise BenchmarkError(f"{path} record {n}: needs a text {f['question']!r} and an {f['answer']!r}; "
                                     f"it has fields {sorted(rec)}")
            split = str(rec.get(f["split"], "")) if "split" in f else request.splits[0]
            if split not in per_split or _key(q) in seen:
                continue
            if request.limit_per_split and per_split[split] >= request.limit_per_split:
                continue
            per_split[split] += 1
            rid = str(rec.get(f["id"], n)) if "id" in f else str(n)
            gold = normalize_answer(a if isinstance(a, str) else json.dumps(a))
            texts.append((f"{split}-{re.sub(r'[^A-Za-z0-9_.-]', '_', rid)}", split, speakable(q), gold))
        if not texts:
            raise BenchmarkError(f"{path} gave no questions for splits {list(request.splits)}")
        return by_split(_speak(texts, DEFAULT_VOICES, (150, 190), (35, 65), request.seed, "local"), request.splits)

"""GSM8K test as a spoken benchmark (split ``gsm8k``): ``.jsonl`` records with ``question`` and an
``answer`` ending ``#### N``, spoken through the synthesis path. ``evaluate.benchmark: gsm8k:PATH``.
"""

from __future__ import annotations

from pathlib import Path

from tasks.evaluate.benchmarks.base import BenchmarkError, Item, Request, by_split, speak_records


def parse(rec: dict) -> tuple[str, str]:
    from tasks.evaluate.metric import normalize_answer

    q, a = rec.get("question"), rec.get("answer")
    if not isinstance(q, str) or not isinstance(a, str) or "#### " not in a:
        raise ValueError("needs 'question' and an 'answer' ending '#### N'")
    return q.strip(), normalize_answer(a)  # the number after "#### ", as AudioBench reads a GSM8K gold




class GSM8K:
    name = "gsm8k"
    scoring = "audiobench_math"

    def items(self, request: Request) -> dict[str, list[Item]]:
        return by_split(_items(self.name, parse, request), request.splits)


def _items(kind: str, parse, request: Request) -> list[Item]:
    if not request.argument:
        raise BenchmarkError(f"evaluate.benchmark {kind} needs a file: write '{kind}:PATH'")
    if list(request.splits) != [kind]:
        raise BenchmarkError(f"benchmark {kind} has one split, {kind!r}: set evaluate.splits to [{kind}]")
    return speak_records(kind, parse, Path(request.argument), request.limit_per_split, training=request.training,
                         seed=request.seed)

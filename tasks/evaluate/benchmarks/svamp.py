"""SVAMP as a spoken benchmark (split ``svamp``): ``.json`` records with ``Body``, ``Question`` and
``Answer``, joined and spoken as the synthesize stage does. ``evaluate.benchmark: svamp:PATH``.
"""

from __future__ import annotations

from tasks.evaluate.benchmarks.base import Item, Request, by_split
from tasks.evaluate.benchmarks.gsm8k import _items


def parse(rec: dict) -> tuple[str, str]:
    from tasks.evaluate.metric import normalize_answer

    body, q, a = rec.get("Body"), rec.get("Question"), rec.get("Answer")
    if not isinstance(body, str) or not isinstance(q, str) or not body.strip() or not q.strip():
        raise ValueError("needs 'Body' and 'Question'")
    if isinstance(a, bool) or not isinstance(a, (int, float, str)):
        raise ValueError(f"needs a numeric 'Answer', got {a!r}")
    body, q = body.strip(), q.strip()
    # Joined as the synthesize stage joins them (tasks/synth/solutions.py, from_svamp).
    question = f"{body} {q}" if body[-1] in ".!?" else f"{body}, {q[0].lower()}{q[1:]}"
    return question, normalize_answer(str(a))




class SVAMP:
    name = "svamp"
    scoring = "audiobench_math"

    def items(self, request: Request) -> dict[str, list[Item]]:
        return by_split(_items(self.name, parse, request), request.splits)

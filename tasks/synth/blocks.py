"""Column facts and TiS think blocks: find the one-digit facts of a scratchpad, and lay them out uncut.

A TiS block holds ``think`` reasoning tokens, then ``speak`` response tokens (``models.format``), so a column
fact such as ``4+8+1=13`` is cut when its tokens fall in two blocks: ``4+8+1= <|speak|> 8 6 <|think|> 13``.
On the pipeline's TiS answers such cut facts were right 55.5 % of the time and uncut ones 86.2 %
(``bench/bench_straddle.py``, README "Where TiS loses its arithmetic"). ``align_facts`` pads the reasoning
with spaces before a fact that would be cut, so it starts a block instead (a fact longer than a block
is left as it is); the model learns to write the spaces too.

    column_facts("46+86: 6+6=12 c1 =2|4+8+1=13 =132|132")   # -> [(7, 13, True), (20, 28, True)]
    align_facts(tokenizer, reasoning, think=8)             # the reasoning, spaces added where a fact is cut
"""

from __future__ import annotations

import re

# A column fact: one digit, then operators each followed by a digit (or +10, a borrow), then = and the result.
_FACT = re.compile(r"(?<![\d*+\-])(\d)((?:[+\-*]\d+)+)=(\d+)")


def column_facts(reasoning: str) -> list[tuple[int, int, bool]]:
    """(start char, end char, arithmetic right) of each one-digit column fact in ``reasoning`` (``a+b=c``,
    ``a+b+1=c``, ``a-b+10=c``, ``a-1-b=c``, ``a*b=c``, ``a*b+c=d``); headers (``47+38:``) and sums of
    partial products, whose operands have several digits, are not column facts."""
    out = []
    for m in _FACT.finditer(reasoning):
        lhs = m.group(1) + m.group(2)
        terms = re.findall(r"[+\-*]?\d+", lhs)
        if any(len(t.lstrip("+-*")) > 1 and t.lstrip("+-*") != "10" for t in terms):
            continue
        out.append((m.start(), m.end(), _value(terms) == int(m.group(3))))
    return out


def _value(terms: list[str]) -> int:
    """``["4", "*9", "+3"]`` -> 39: products first, then sums and differences."""
    total, prod, sign = 0, None, 1
    for t in terms:
        op, n = (t[0], int(t[1:])) if t[0] in "+-*" else ("+", int(t))
        if op == "*":
            prod *= n
            continue
        if prod is not None:
            total += sign * prod
        prod, sign = n, (-1 if op == "-" else 1)
    return total + sign * prod


def token_spans(tokenizer, reasoning: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(first token, last token) of each character span of ``reasoning`` as ``tokenizer`` splits it."""
    return _spans(_offsets(tokenizer, reasoning), spans)


def _offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def _spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    def at(c: int) -> int:
        return max((i for i, (a, b) in enumerate(offsets) if a <= c < max(b, a + 1)), default=0)

    return [(at(a), at(b - 1)) for a, b in spans]


def is_cut(first: int, last: int, think: int) -> bool:
    return first // think != last // think


def align_facts(tokenizer, reasoning: str, think: int) -> str:
    """``reasoning`` with spaces before every column fact that a TiS block boundary would cut (reasoning token
    ``k`` sits in block ``k // think``) and that fits in one block, so it starts the next block instead. A
    tokenizer that merges runs of spaces may not shift a fact far enough; then that fact stays as it was."""
    i = 0
    offsets = _offsets(tokenizer, reasoning)  # tokenized again only when the reasoning changes
    while True:
        facts = column_facts(reasoning)
        if i >= len(facts):
            return reasoning
        start, end, _ = facts[i]
        (first, last), = _spans(offsets, [(start, end)])
        if is_cut(first, last, think) and last - first + 1 <= think:
            pad = " " * (think - first % think)
            moved = reasoning[:start] + pad + reasoning[start:]
            moved_offsets = _offsets(tokenizer, moved)
            (f2, l2), = _spans(moved_offsets, [(start + len(pad), end + len(pad))])
            if not is_cut(f2, l2, think):
                reasoning, offsets = moved, moved_offsets
        i += 1

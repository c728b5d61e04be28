"""Built-in math problem generator: the offline default data source.

Four kinds, matching Spoken-MQA's splits: ``short_digit`` and ``long_digit`` arithmetic,
``single_step`` and ``multi_step`` word problems. Every problem has an exact integer answer, a
reasoning trace that works the arithmetic out digit by digit (``tasks.synth.scratchpad``: columns with
carries and borrows, partial products, long division; a word problem names its quantities and the
operation first) and a concise spoken response ending "The answer is N.".
The response only states numbers after the reasoning has derived them (or that the question gave).

    python -m tasks.synth.builtin 5      # print five problems
"""

from __future__ import annotations

import functools
import random
import sys
from dataclasses import asdict, dataclass

from tasks.core.params import BUILTIN_KINDS
from tasks.synth.scratchpad import STYLES, trace, value

KINDS = BUILTIN_KINDS  # one list, in params (which checks synthesize.sources[].kinds against it)


@dataclass(frozen=True)
class Problem:
    id: str
    source: str
    kind: str
    question: str
    reasoning: str
    response: str
    answer: str

    def to_dict(self) -> dict:
        return asdict(self)


NAMES = ["Tom", "Ana", "Liam", "Mia", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sara", "Ben", "Ivy"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "shells", "coins", "stamps"]
OPS = {"+": "plus", "-": "minus", "*": "times"}


def _arith(rng: random.Random, lo: int, hi: int, t=trace) -> tuple[str, str, str, int]:
    op = rng.choice(["+", "-", "*"])
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if op == "-" and b > a:
        a, b = b, a
    if op == "*" and hi > 100:  # keep long products readable
        b = rng.randint(2, 99)
    val = value(a, op, b)
    return f"What is {a} {OPS[op]} {b}?", t(a, op, b), f"{a} {OPS[op]} {b}", val


def short_digit(rng: random.Random, t=trace) -> tuple[str, str, str, int]:
    q, reasoning, spoken, val = _arith(rng, 1, 99, t)
    return q, reasoning, f"Let me work it out. {spoken} is {val}. The answer is {val}.", val


def long_digit(rng: random.Random, t=trace) -> tuple[str, str, str, int]:
    q, reasoning, spoken, val = _arith(rng, 1000, 99999, t)
    return q, reasoning, f"Let me compute {spoken} carefully. It comes to {val}. The answer is {val}.", val


def single_step(rng: random.Random, t=trace) -> tuple[str, str, str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    form = rng.randrange(4)
    # Reasoning: the quantities, the operation, then its scratchpad (tasks/synth/scratchpad.py).
    if form == 0:
        val = a + b
        q = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
        r = f"Has {a}, gets {b} more. {t(a, '+', b)}."
        s = f"{name} had {a} {item} and got {b} more, so {name} now has {val}."
    elif form == 1:
        a, b = max(a, b) + 5, min(a, b)
        val = a - b
        q = f"{name} had {a} {item} and gave away {b}. How many {item} are left?"
        r = f"Had {a}, gave away {b}. {t(a, '-', b)}."
        s = f"Giving away {b} of {a} leaves {val} {item}."
    elif form == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        val = a * b
        q = f"There are {a} boxes with {b} {item} in each box. How many {item} are there in all?"
        r = f"{a} boxes of {b}. {t(a, '*', b)}."
        s = f"With {a} boxes of {b} each, there are {val} {item}."
    else:
        b = rng.randint(2, 9)
        val = rng.randint(2, 15)
        a = b * val
        q = f"{name} shares {a} {item} equally among {b} friends. How many {item} does each friend get?"
        r = f"{a} shared by {b}. {t(a, '/', b)}."
        s = f"Sharing {a} {item} among {b} friends gives each friend {val}."
    return q, r, f"{s} The answer is {val}.", val


def multi_step(rng: random.Random, t=trace) -> tuple[str, str, str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    form = rng.randrange(3)
    if form == 0:
        price, count = rng.randint(2, 15), rng.randint(2, 9)
        cost = price * count
        paid = (cost // 10 + 1 + rng.randint(0, 3)) * 10
        val = paid - cost
        q = (f"{item.capitalize()} cost {price} dollars each. {name} buys {count} {item} and pays with "
             f"{paid} dollars. How much change does {name} get?")
        r = f"Cost: {t(price, '*', count)}. Change: {t(paid, '-', cost)}."
        s = f"{count} {item} cost {cost} dollars, so the change from {paid} is {val} dollars."
    elif form == 1:
        a, b, c = rng.randint(5, 40), rng.randint(5, 40), rng.randint(1, 20)
        total = a + b
        c = min(c, total - 1)
        val = total - c
        q = (f"{name} collected {a} {item} on Monday and {b} {item} on Tuesday, then lost {c}. "
             f"How many {item} does {name} have?")
        r = f"Collected: {t(a, '+', b)}. Lost {c}: {t(total, '-', c)}."
        s = f"{name} collected {total} {item} in two days and after losing {c} has {val} left."
    else:
        rows, per, extra = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 30)
        prod = rows * per
        val = prod + extra
        q = (f"A garden has {rows} rows of {per} plants, and {extra} more plants by the fence. "
             "How many plants are in the garden?")
        r = f"Rows: {t(rows, '*', per)}. With the fence: {t(prod, '+', extra)}."
        s = f"The rows hold {prod} plants, and with the fence the garden has {val} plants."
    return q, r, f"{s} The answer is {val}.", val


MAKERS = {"short_digit": short_digit, "long_digit": long_digit, "single_step": single_step, "multi_step": multi_step}


def generate_problems(n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS, style: str = "scratchpad") -> list[Problem]:
    """``n`` problems, reproducible from ``seed``, cycling through ``kinds``; their arithmetic written in
    the trace ``style`` (``tasks.synth.scratchpad.STYLES``; the same problems whatever the style)."""
    unknown = [k for k in kinds if k not in MAKERS]
    if unknown:
        raise ValueError(f"unknown problem kinds {unknown}; choose from {list(MAKERS)}")
    if style not in STYLES:
        raise ValueError(f"unknown trace style {style!r}; use one of {STYLES} (synthesize.trace)")
    t = functools.partial(trace, style=style)
    if n < 0:
        raise ValueError(f"number of problems must be >= 0, got {n}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        q, r, s, val = MAKERS[kind](rng, t)
        out.append(Problem(f"builtin-{seed}-{i}", "builtin", kind, q, r, s, str(val)))
    return out


if __name__ == "__main__":
    for p in generate_problems(int(sys.argv[1]) if len(sys.argv) > 1 else 4, seed=0):
        print(f"[{p.kind}] {p.question}\n  reasoning: {p.reasoning}\n  response: {p.response}\n")

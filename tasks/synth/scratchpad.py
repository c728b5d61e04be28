"""Reasoning traces a small transformer can learn: arithmetic written out digit by digit.

A one-line trace (``38417 * 56 = 2151352``) asks a model for the whole result in one step; small
transformers do not learn that from thousands of examples. Lee et al., *Teaching Arithmetic to Small
Transformers* (arXiv 2307.03381), show that a detailed scratchpad (one column at a time, carries and
borrows written out) makes multi-digit arithmetic learnable with far fewer samples. The TiS format
has ``think`` silent positions for every ``speak`` spoken one: room for exactly such a scratchpad.

Every step is local (a column's digits, the carry just written) and the digits are single tokens
(the tokenizer splits numbers into digits), so each next token depends on a few earlier ones:

    add(47, 38)    -> "47+38: 7+8=15 c1|4+3+1=8|85"
    sub(47, 38)    -> "47-38: 7-8+10=9 b1|4-1-3=0|9"
    mul(47, 6)     -> "47*6: 7*6=42 c4|4*6+4=28|282"
    mul(347, 56)   -> "347*56: 347*6: ...|2082; 347*5: ...|1735; 2082+17350: ...|19432"
    div(126, 9)    -> "126/9: 1/9=0 r1|12/9=1 r3|36/9=4 r0|14"

``partials`` (trace style ``partials``): each column also writes the result's digits so far, right to
left (``47+38: 7+8=15 c1 =5|4+3+1=8 =85|85``), so the final result is a copy of the text just before it
instead of digits gathered back to front from every column (bench/bench_ladder.py: 2-digit addition in
TiS 6 % -> 31.5 % after 300 x 32 steps, 84 % -> 98 % after 600 x 32).

``remaining`` (trace style ``remaining``): ``partials`` plus, before every column after the
first, what is left of the operands (``72816-24400: 6-0=6 =6|7281-2440: 1-0=1 =16|728-244: ...``). A column's
digits are then the last ones of the header just written, a fixed step back, instead of the i-th digit counted
from the end of a number far back in the sequence, which a 2-layer model gets wrong on long numbers; writing a
header is a copy of the one before minus its last digit (bench/bench_ladder.py: 3-digit addition in TiS
19.0 % -> 55.5 % after 600 x 32; 5-digit addition and subtraction 0 % with either at that budget). Not the
default: on the built-in mixture at the default's budget it measured no gain and cost 3.5 more minutes (README).

The trace ends with the result's digits, so the response may say the result only after it (the
drift rule in ``models.drift``). ``trace(a, op, b)`` picks the routine; ``one_line`` is the baseline.

    python -m tasks.synth.scratchpad 38417 '*' 56
"""

from __future__ import annotations

import sys

OPS = ("+", "-", "*", "/")


def _digits(n: int) -> list[int]:
    """Least significant digit first."""
    return [int(c) for c in reversed(str(n))]


def _so_far(partial: str, column: int, last: bool) -> str:
    """The result's digits so far (``partials``): this column's digit (its whole value in the last
    column, where the carry out leads) before the digits of the columns to its right."""
    return (str(column) if last else str(column % 10)) + partial


def _left(i: int, *operands: int, op: str) -> str:
    """``remaining``: the operands without their ``i`` rightmost digits (``7281+2440: ``), so the next
    column's digits are the last ones just written."""
    return f"{op.join(str(x // 10**i) for x in operands)}: " if i else ""


def add(a: int, b: int, head: bool = True, partials: bool = False, remaining: bool = False) -> str:
    """Column addition, right to left: ``a_i+b_i(+carry)=s`` and ``c1`` when a carry goes on."""
    if a < 0 or b < 0:
        raise ValueError(f"add() takes non-negative integers, got {a} and {b}")
    da, db = _digits(a), _digits(b)
    cols, carry, so_far = [], 0, ""
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        s = x + y + carry
        last = i == max(len(da), len(db)) - 1
        col = (_left(i, a, b, op="+") if remaining else "") + f"{x}+{y}" + ("+1" if carry else "") + f"={s}"
        carry = s // 10
        if carry and not last:
            col += " c1"
        if partials:
            so_far = _so_far(so_far, s, last)
            col += f" ={so_far}"
        cols.append(col)
    body = "|".join(cols) + f"|{a + b}"
    return f"{a}+{b}: {body}" if head else body


def sub(a: int, b: int, head: bool = True, partials: bool = False, remaining: bool = False) -> str:
    """Column subtraction of ``b <= a``: ``a_i(-1)-b_i(+10)=d`` and ``b1`` when a borrow goes on."""
    if not 0 <= b <= a:
        raise ValueError(f"sub() takes 0 <= b <= a, got {a} - {b}; swap them or handle the sign first")
    da, db = _digits(a), _digits(b)
    cols, borrow, so_far = [], 0, ""
    for i in range(len(da)):
        x, y = da[i], (db[i] if i < len(db) else 0)
        top = x - borrow
        out = top < y
        col = ((_left(i, a, b, op="-") if remaining else "") + f"{x}" + ("-1" if borrow else "") + f"-{y}"
               + ("+10" if out else "") + f"={top - y + 10 * out}")
        if out:
            col += " b1"
        borrow = int(out)
        if partials:
            so_far = _so_far(so_far, top - y + 10 * out, i == len(da) - 1)
            col += f" ={so_far}"
        cols.append(col)
    body = "|".join(cols) + f"|{a - b}"
    return f"{a}-{b}: {body}" if head else body


def _mul_digit(a: int, d: int, partials: bool = False, remaining: bool = False) -> str:
    """``a`` times one digit ``d``, right to left: ``a_i*d(+carry)=v`` and ``cK`` for the carry."""
    da = _digits(a)
    cols, carry, so_far = [], 0, ""
    for i, x in enumerate(da):
        v = x * d + carry
        col = (f"{a // 10**i}*{d}: " if remaining and i else "") + f"{x}*{d}" + (f"+{carry}" if carry else "") + f"={v}"
        carry = v // 10
        if carry and i < len(da) - 1:
            col += f" c{carry}"
        if partials:
            so_far = _so_far(so_far, v, i == len(da) - 1)
            col += f" ={so_far}"
        cols.append(col)
    return "|".join(cols) + f"|{a * d}"


def mul(a: int, b: int, head: bool = True, partials: bool = False, remaining: bool = False) -> str:
    """``a * b``: one digit of the multiplier at a time, then the shifted partial products added in columns."""
    if a < 0 or b < 0:
        raise ValueError(f"mul() takes non-negative integers, got {a} and {b}")
    if b >= 10 and a < 10:
        a, b = b, a  # the one-digit factor is the multiplier
    if b < 10:
        body = _mul_digit(a, b, partials, remaining)
    else:
        parts, total = [], 0
        for k, d in enumerate(_digits(b)):
            partial = a * d * 10**k
            parts.append(f"{a}*{d}: {_mul_digit(a, d, partials, remaining)}")
            if k:
                parts.append(add(total, partial, partials=partials, remaining=remaining))
            total += partial
        body = "; ".join(parts)
        if not body.endswith(f"|{a * b}"):  # a multiplier with one non-zero digit ends on its product
            body += f"|{a * b}"
    return f"{a}*{b}: {body}" if head else body


def div(a: int, b: int, head: bool = True, multiples: bool = False) -> str:
    """Long division of ``a`` by ``b`` (exact or not), one digit of ``a`` at a time.

    Each column takes the remainder so far with the next digit (``cur``) and states how often ``b`` goes
    into it in one step: ``cur/b=q rR``. With ``multiples`` (a one-digit divisor) it counts up the multiples
    of ``b`` instead, until one is past ``cur`` (``63: 9*1=9 9*2=18 ... 9*7=63 9*8=72 q7 r0``): times-table
    facts read forwards rather than a table read backwards. Not the default: on the ladder (3-digit by
    1-digit, 400 x 32 steps) it scored 2 % TiS / 9 % think-first against 9 % / 39 % for one step a column:
    more steps to get wrong (where to stop counting, the remainder) than the lookup it replaces (README).
    """
    if b <= 0 or a < 0:
        raise ValueError(f"div() takes a >= 0 and b > 0, got {a} / {b}")
    cols, rem = [], 0
    for c in str(a):
        cur = rem * 10 + int(c)
        q, rem = divmod(cur, b)
        if multiples and b < 10:
            counted = " ".join(f"{b}*{k}={b * k}" for k in range(1, q + 2))
            cols.append(f"{cur}: {counted} q{q} r{rem}")
        else:
            cols.append(f"{cur}/{b}={q} r{rem}")
    body = "|".join(cols) + f"|{a // b}"
    return f"{a}/{b}: {body}" if head else body


ROUTINES = {"+": add, "-": sub, "*": mul, "/": div}


def value(a: int, op: str, b: int) -> int:
    if op not in ROUTINES:
        raise ValueError(f"unknown operation {op!r}; use one of {OPS}")
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]


STYLES = ("scratchpad", "partials", "remaining", "one_line")


def trace(a: int, op: str, b: int, style: str = "scratchpad") -> str:
    """The reasoning for ``a op b``: ``scratchpad`` (column by column), ``partials`` (column by column,
    with the result's digits so far after each column; division is unchanged: its quotient already comes
    most significant digit first), ``remaining`` (partials, and before each column what is left of the
    operands) or ``one_line`` (``a op b = v``)."""
    if style == "one_line":
        return one_line(a, op, b)
    if style not in STYLES:
        raise ValueError(f"unknown trace style {style!r}; use one of {STYLES}")
    if op not in ROUTINES:
        raise ValueError(f"unknown operation {op!r}; use one of {OPS}")
    if style in ("partials", "remaining") and op != "/":
        return ROUTINES[op](a, b, partials=True, remaining=style == "remaining")
    return ROUTINES[op](a, b)


def one_line(a: int, op: str, b: int) -> str:
    return f"{a} {op} {b} = {value(a, op, b)}"


if __name__ == "__main__":
    x, o, y = sys.argv[1:4] if len(sys.argv) > 3 else ("38417", "*", "56")
    print(trace(int(x), o, int(y)))

"""Scratchpad traces: every step is right, the result ends the trace, and built-in samples keep the
drift rule and fit the stages' lengths."""

from __future__ import annotations

import random
import re

import pytest

from tasks.synth import scratchpad as sp


def _check_division_column(step: str) -> bool:
    """A counted division column (``63: 9*1=9 ... 9*8=72 q7 r0``): the multiples of the divisor from 1 up to
    the first past the column's number, each product right, then that number's quotient and remainder."""
    m = re.fullmatch(r"(\d+): ((?:\d\*\d+=\d+ )+)q(\d+) r(\d+)", step.strip())
    if not m:
        return False
    cur, q, r = int(m[1]), int(m[3]), int(m[4])
    facts = [re.fullmatch(r"(\d)\*(\d+)=(\d+)", f).groups() for f in m[2].split()]
    b = int(facts[0][0])
    assert [int(k) for _, k, _ in facts] == list(range(1, len(facts) + 1)), step
    assert all(int(x) == b and int(x) * int(k) == int(v) for x, k, v in facts), step
    assert (q, r) == divmod(cur, b) and len(facts) == q + 1, step  # counted up to the first multiple past cur
    return True


def _check_columns(trace: str) -> None:
    """Every `x+y(+1)=s`, `x(-1)-y(+10)=d`, `x*d(+c)=v`, `cur/b=q rR` and counted division step is
    arithmetic that holds, and every written carry/borrow is the one the step makes."""
    for step in re.split(r"[|;]", trace):
        if _check_division_column(step):
            continue
        step = step.split(": ")[-1].strip()
        m = re.fullmatch(r"([\d+*/-]+)=(\d+)(?: ([cbr])(\d+))?", step)
        if not m:
            continue  # a result or a header
        lhs, rhs, mark, k = m.groups()
        if "/" in lhs:
            cur, b = map(int, lhs.split("/"))
            assert (int(rhs), int(k)) == divmod(cur, b), step
            continue
        assert eval(lhs) == int(rhs), step  # noqa: S307 - digits and + - * only (regex above)
        if mark == "c":
            assert int(k) == int(rhs) // 10, step
        if mark == "b":
            assert "+10" in lhs, step


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_every_step_holds_and_the_trace_ends_with_the_value(op):
    rng = random.Random(op)
    for _ in range(400):
        a, b = rng.randint(0, 99999), rng.randint(1, 999)
        if op == "-" and b > a:
            a, b = b, a
        t = sp.trace(a, op, b)
        assert t.endswith(f"|{sp.value(a, op, b)}"), t
        assert t.startswith(f"{a}{op}{b}: ") or (op == "*" and t.startswith(f"{b}{op}{a}: "))
        _check_columns(t)


def test_division_by_one_digit_can_count_up_its_multiples():
    """``div(multiples=True)``: each column of a one-digit division counts the divisor's multiples up to the
    first past the column's number (a times-table fact read forwards, not a table read backwards)."""
    rng = random.Random(9)
    for _ in range(300):
        a, b = rng.randint(0, 99999), rng.randint(1, 9)
        for t in (sp.div(a, b, multiples=True),):
            cols = t.split(": ", 1)[1].split("|")
            assert len(cols) == len(str(a)) + 1 and cols[-1] == str(a // b), t
            assert all(_check_division_column(c) for c in cols[:-1]), t
            assert "".join(re.findall(r" q(\d+) ", t)).lstrip("0") == str(a // b).lstrip("0"), t


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_partials_write_the_result_so_far_after_each_column(op):
    """The ``partials`` style is the scratchpad plus, after each column, the result's digits so far:
    each extends the one before and the routine's result is a copy of the last (division unchanged)."""
    rng = random.Random(op)
    for _ in range(400):
        a, b = rng.randint(0, 99999), rng.randint(1, 999)
        if op == "-" and b > a:
            a, b = b, a
        t = sp.trace(a, op, b, "partials")
        assert re.sub(r" =\d+", "", t) == sp.trace(a, op, b), t
        if op == "/":
            continue
        for part in t.split(": ", 1)[1].split("; "):  # a product: each partial product, then their sums
            so_far = re.findall(r" =(\d+)", part)
            assert so_far, part
            assert all(y.endswith(x) and len(y) > len(x) for x, y in zip(so_far, so_far[1:])), part
            assert int(so_far[-1]) == int(part.rsplit("|", 1)[1]), part


@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_remaining_writes_what_is_left_of_the_operands_before_each_column(op):
    """The ``remaining`` style is ``partials`` plus, before every column after the first, the operands
    without the digits already used: each column's digits are the last ones of the header just written
    (no digit fetched by counting from the far end of the question)."""
    rng = random.Random(op)
    for _ in range(400):
        a, b = rng.randint(0, 99999), rng.randint(1, 999) if op != "*" else rng.randint(2, 9)
        if op == "-" and b > a:
            a, b = b, a
        t = sp.trace(a, op, b, "remaining")
        assert re.sub(r"\|[\d+*-]+: ", "|", t) == sp.trace(a, op, b, "partials"), t
        cols = t.split(": ", 1)[1].split("|")[:-1]
        assert len(cols) == len(str(a if op != "+" else max(a, b))), t
        for i, col in enumerate(cols):
            left_a, left_b = a // 10**i, (b if op == "*" else b // 10**i)
            if i:
                assert col.startswith(f"{left_a}{op}{left_b}: "), (i, col, t)
                col = col.split(": ", 1)[1]
            borrow = "(-1)?" if op == "-" else ""
            assert re.match(rf"{left_a % 10}{borrow}\{op}{left_b % 10 if op != '*' else b}\b", col), (i, col, t)
    long = sp.trace(38417, "*", 56, "remaining")  # products and their sum: every part has its headers
    assert "3841*6: 1*6+4=10" in long and "3841*5: 1*5+3=8" in long and "23050+192085: 0+5=5" in long, long


def test_examples_read_as_documented():
    assert sp.add(47, 38) == "47+38: 7+8=15 c1|4+3+1=8|85"
    assert sp.sub(47, 38) == "47-38: 7-8+10=9 b1|4-1-3=0|9"
    assert sp.mul(47, 6) == "47*6: 7*6=42 c4|4*6+4=28|282"
    assert sp.div(126, 9) == "126/9: 1/9=0 r1|12/9=1 r3|36/9=4 r0|14"
    assert sp.div(126, 9, multiples=True) == ("126/9: 1: 9*1=9 q0 r1|12: 9*1=9 9*2=18 q1 r3|"
                                              "36: 9*1=9 9*2=18 9*3=27 9*4=36 9*5=45 q4 r0|14")
    assert sp.div(240, 12, multiples=True) == "240/12: 2/12=0 r2|24/12=2 r0|0/12=0 r0|20"  # 2-digit divisor
    assert sp.one_line(47, "*", 6) == "47 * 6 = 282"
    assert sp.trace(47, "+", 38, "partials") == "47+38: 7+8=15 c1 =5|4+3+1=8 =85|85"
    assert sp.trace(47, "-", 38, "partials") == "47-38: 7-8+10=9 b1 =9|4-1-3=0 =09|9"
    assert sp.trace(47, "*", 6, "partials") == "47*6: 7*6=42 c4 =2|4*6+4=28 =282|282"
    assert sp.trace(47, "+", 38, "remaining") == "47+38: 7+8=15 c1 =5|4+3: 4+3+1=8 =85|85"
    assert sp.trace(472, "-", 38, "remaining") == "472-38: 2-8+10=4 b1 =4|47-3: 7-1-3=3 =34|4-0: 4-0=4 =434|434"


def test_bad_operands_say_what_to_do():
    with pytest.raises(ValueError, match="swap them"):
        sp.sub(3, 5)
    with pytest.raises(ValueError, match="b > 0"):
        sp.div(3, 0)
    with pytest.raises(ValueError, match="unknown operation"):
        sp.trace(1, "^", 2)
    with pytest.raises(ValueError, match="trace style"):
        sp.trace(1, "+", 2, style="fancy")


@pytest.mark.parametrize("style", ["scratchpad", "partials", "remaining"])
def test_builtin_samples_keep_the_drift_rule_and_fit(tokenizer, style):
    """Every built-in kind with its scratchpad: the response says no number before the reasoning derived it,
    and the longest TiS layout fits text_tis.max_len (acoustic stages add the audio prompt)."""
    from models.drift import tokenize_sample
    from models.format import Schedule, build
    from models.tokenizer import control_ids, text_prompt
    from tasks.core.params import load_params
    from tasks.synth.builtin import generate_problems

    p = load_params()
    ids, sch = control_ids(tokenizer), Schedule(p.schedule.speak, p.schedule.think)
    longest: dict[str, int] = {}
    for prob in generate_problems(400, seed=5, style=style):
        _check_columns(re.sub(r" =\d+", "", prob.reasoning))
        assert prob.reasoning.rstrip(".").endswith(prob.answer), prob
        t = tokenize_sample(tokenizer, prob.question, prob.response, prob.reasoning, sch)  # DriftError otherwise
        lay = build("tis", text_prompt(tokenizer, prob.question), t.response_ids, t.reasoning_ids, ids, sch,
                    min_block=t.min_block, delay_eos=True)
        longest[prob.kind] = max(longest.get(prob.kind, 0), len(lay))
    assert set(longest) == {"short_digit", "long_digit", "single_step", "multi_step"}
    # partials and remaining lengthen long additions and products: params.yaml sizes text_tis.max_len for the
    # default (synthesize.trace), and its comment says what the others need
    need = {"scratchpad": 560, "partials": 720, "remaining": 800}
    assert max(longest.values()) <= need[style], longest
    assert need[p.synthesize.trace] <= p.text_tis.max_len
    assert p.acoustic_tis.max_len >= p.text_tis.max_len + 200 and p.talker.max_len >= p.text_tis.max_len + 200

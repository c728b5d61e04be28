"""Scratchpad traces: every step is right, the result ends the trace, and built-in samples keep the
drift rule and fit the stages' lengths."""

from __future__ import annotations

import random
import re

import pytest

from tasks.synth import scratchpad as sp


def _check_columns(trace: str) -> None:
    """Every `x+y(+1)=s`, `x(-1)-y(+10)=d`, `x*d(+c)=v` and `cur/b=q rR` step is arithmetic that holds,
    and every written carry/borrow is the one the step makes."""
    for step in re.split(r"[|;]", trace):
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


def test_examples_read_as_documented():
    assert sp.add(47, 38) == "47+38: 7+8=15 c1|4+3+1=8|85"
    assert sp.sub(47, 38) == "47-38: 7-8+10=9 b1|4-1-3=0|9"
    assert sp.mul(47, 6) == "47*6: 7*6=42 c4|4*6+4=28|282"
    assert sp.div(126, 9) == "126/9: 1/9=0 r1|12/9=1 r3|36/9=4 r0|14"
    assert sp.one_line(47, "*", 6) == "47 * 6 = 282"
    assert sp.trace(47, "+", 38, "partials") == "47+38: 7+8=15 c1 =5|4+3+1=8 =85|85"
    assert sp.trace(47, "-", 38, "partials") == "47-38: 7-8+10=9 b1 =9|4-1-3=0 =09|9"
    assert sp.trace(47, "*", 6, "partials") == "47*6: 7*6=42 c4 =2|4*6+4=28 =282|282"


def test_bad_operands_say_what_to_do():
    with pytest.raises(ValueError, match="swap them"):
        sp.sub(3, 5)
    with pytest.raises(ValueError, match="b > 0"):
        sp.div(3, 0)
    with pytest.raises(ValueError, match="unknown operation"):
        sp.trace(1, "^", 2)
    with pytest.raises(ValueError, match="trace style"):
        sp.trace(1, "+", 2, style="fancy")


@pytest.mark.parametrize("style", ["scratchpad", "partials"])
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
    # partials (the default) lengthen long additions and products: params.yaml sizes text_tis.max_len for them
    # (720; acoustic_tis/talker 920), and its synthesize.trace comment says what scratchpad needs (560)
    assert max(longest.values()) <= (560 if style == "scratchpad" else p.text_tis.max_len), longest
    assert p.acoustic_tis.max_len >= p.text_tis.max_len + 200 and p.talker.max_len >= p.text_tis.max_len + 200

"""Misreadings found on public sets the project had never seen (GSM8K socratic, AQuA, Orca-Math),
each tested on its pattern with several numbers and layouts, and each spoken form read back by the
independent words-to-number reader (``tasks.synth.readback``): every spoken number keeps its value."""

from __future__ import annotations

import json
import random

import pytest

from tasks.synth.readback import mismatch, values
from tasks.synth.solutions import NoSolution, Reject, collapse_equations, decompose, gsm8k_steps, option_answer
from tasks.synth.verbalize import clean_response, speakable, unspeakable_chars


def said(text: str) -> str:
    """The spoken form, checked: no digit or symbol left, and the same values as the text and as the
    digit-keeping response form."""
    s = speakable(text)
    assert not unspeakable_chars(s), (text, s)
    assert mismatch(text, s) == "", (text, s, mismatch(text, s))
    c = clean_response(text)
    assert mismatch(text, c) == "" and mismatch(c, speakable(c)) == "", (text, c)
    return s


@pytest.mark.parametrize("amount, scale, words", [("6", "lakh", "six lakh rupees"), ("2.5", "crore", "two point five crore rupees"),
                                                  ("15", "lakhs", "fifteen lakhs rupees"), ("1", "crore", "one crore rupees")])
@pytest.mark.parametrize("prefix", ["Rs. ", "Rs.", "Rs ", "INR ", "\u20b9"])
def test_lakh_and_crore_are_scales_after_the_amount(prefix, amount, scale, words):
    s = said(f"They raised {prefix}{amount} {scale} in a year.")
    assert words in s, s


def test_lakh_and_crore_read_back_as_their_values():
    assert values("Rs. 6 lakh", spoken=False) == values("six lakh rupees", spoken=True)
    assert ("n", 600000) in values("Rs. 6 lakh", spoken=False)
    assert ("n", 25000000) in values("two point five crore rupees", spoken=True)
    assert mismatch("Rs. 6 lakh", "six rupees") != ""  # a dropped scale is a changed value


@pytest.mark.parametrize("text, words", [("Rs.75/-", "seventy-five rupees"), ("Rs. 1200/-", "one thousand two hundred rupees"),
                                         ("Rs25/-", "twenty-five rupees"), ("Rs. 1,250 /-", "one thousand two hundred and fifty rupees")])
def test_whole_amount_mark_is_not_read(text, words):
    s = said(f"A kg of paper sold at {text}. How much now?")
    assert words in s and "over" not in s, s


@pytest.mark.parametrize("h, m", [(5, 2), (6, 30), (11, 59), (12, 0), (1, 5)])
@pytest.mark.parametrize("ampm", ["A.M.", "P.M.", "a.m.", "pm", "AM"])
def test_dotted_clock_times_with_am_pm(h, m, ampm):
    s = said(f"The train starts at {h}.{m:02d} {ampm} every day.")
    ap = ampm[0].lower()
    assert f" {ap} m" in s and "point" not in s, s
    assert ("t", (h % 12 + (12 if ap == "p" else 0)) * 60 + m) in values(f"{h}.{m:02d} {ampm}", spoken=False)


def test_a_decimal_without_am_pm_stays_a_decimal():
    assert said("It weighs 5.02 kg.") == "It weighs five point zero two kg."


@pytest.mark.parametrize("text, unit", [('He is 64" tall.', "sixty-four inches"), ("A 12' board.", "twelve feet"),
                                        ("Cut 7.5\u2033 off.", "seven point five inches"), ("Walk 30\u2032 north.", "thirty feet"),
                                        ("She is 5'10\" tall.", "five feet ten inches"), ("A 3'' pipe.", "three inches")])
def test_inch_and_foot_marks_become_units(text, unit):
    s = said(text)
    assert unit in s, s


@pytest.mark.parametrize("text", ['He wrote "42" on the board.', "The sign said 'take 5' at noon.", "the 1990's fashion"])
def test_quote_marks_after_a_number_stay_quotes(text):
    s = said(text)
    assert "inches" not in s and "feet" not in s, s


@pytest.mark.parametrize("dash", ["\u2013", "\u2014", " \u2013 ", " \u2014 "])
@pytest.mark.parametrize("left, right", [("zx", "y"), ("x", "2"), ("(x - 2)", "4"), ("15", "3y"), ("a2", "b")])
def test_en_and_em_dash_between_operands_is_minus(dash, left, right):
    s = said(f"What is the value of {left}{dash}{right}?")
    assert "minus" in s, s


@pytest.mark.parametrize("text", ["He bought apples \u2013 5 of them \u2013 at noon.", "It was cold \u2014 we left.",
                                  "double\u2013refining works"])
def test_a_dash_beside_words_is_a_pause(text):
    assert "minus" not in said(text)


@pytest.mark.parametrize("terms", [(2, 3, 5), (2, 3, 4), (1, 1, 2, 4), (10, 20, 30), (7, 11, 13)])
@pytest.mark.parametrize("sep", [":", " : "])
def test_ratios_of_several_terms(terms, sep):
    s = said(f"Rice, wheat and corn are in the ratio {sep.join(map(str, terms))} by weight.")
    from tasks.synth.verbalize import integer_words
    assert " to ".join(integer_words(str(t)) for t in terms) in s, s


@pytest.mark.parametrize("text, heard", [
    ("5(\u221a3 + 1)", "five times the quantity the square root of three plus one"),
    ("(\u221a3 \u2013 1)/2", "the quantity the square root of three minus one"),
    ("2(\u221a2 + \u221a3)", "two times the quantity the square root of two plus the square root of three"),
    ("\u221a(a+b)", "the square root of the quantity a plus b"),
])
def test_brackets_around_a_root_keep_their_grouping(text, heard):
    assert heard in said(f"Find {text} now.")


@pytest.mark.parametrize("a, b", [(3, 34), (2, 15), (12, 4), (7, 8)])
def test_implicit_multiplication_collapses_to_its_result(a, b):
    line = f"He spends {a}({b})={a * b} minutes."
    assert collapse_equations(line).split() == f"He spends {a * b} minutes.".split()
    rec = {"question": f"He makes {a} trips of {b} minutes. How long?", "answer": f"{line}\n#### {a * b}"}
    s = decompose("gsm8k", "g", rec)
    assert s.response == f"He spends {a * b} minutes. The answer is {a * b}."
    said(s.response)


@pytest.mark.parametrize("token", ["<|endoftext|>", "<|im_end|>", "</s>", "<pad>", "[SEP]", "<|eot_id|>"])
def test_special_token_text_is_never_kept(token):
    rec = {"question": f"Tom has 3 apples and buys 4.{token} How many?", "answer": f"He has 3+4=7 apples.{token}\n#### 7"}
    s = decompose("gsm8k", "g", rec)
    for text in (s.question, s.reasoning, s.response, speakable(s.question), speakable(s.response)):
        assert token not in text and "endoftext" not in text and "im_end" not in text, text
    orca = decompose("orca_math", "o", {"question": "Tom has 3 apples and buys 4. How many?",
                                        "answer": f"Tom has 3 + 4 = 7 apples.{token}"})
    assert token not in orca.reasoning + orca.response


def socratic(body_lines: list[str], headers: list[str], final: str) -> str:
    return "\n".join(f"{h} ** {b}" for h, b in zip(headers, body_lines)) + f"\n#### {final}"


@pytest.mark.parametrize("label", ["Define a variable", "Simplify", "Write an equation", "Combine like terms",
                                   "How many cookies does she bake in", "How much does the"])
def test_socratic_headers_that_are_not_whole_questions_are_dropped(label):
    body = ["Let x be the number of cookies.", "Then x+x+30=110 cookies.", "So 2*x=80 and x=<<80/2=40>>40."]
    rec = {"question": "She bakes 30 more than twice some cookies, 110 in all. How many?",
           "answer": socratic(body, ["How many cookies does she bake?", label, label], "40")}
    s = decompose("gsm8k", "g", rec)
    assert label not in s.response and label not in s.reasoning, (s.response, s.reasoning)
    assert "How many cookies does she bake?" in s.reasoning and "?" not in s.response
    steps = gsm8k_steps(rec["answer"].split("####")[0])
    assert all("**" not in st for st in steps)


def test_socratic_layout_on_real_gsm8k_records():
    """Every GSM8K test record rewritten in the socratic layout (sub-question headers, label headers,
    a header cut mid-sentence, '**' without spaces) decomposes like the plain record: same answer,
    no header in the response."""
    from conftest import SHARED_DATA

    path = SHARED_DATA / "gsm8k" / "test.jsonl"
    if not path.exists():
        pytest.skip(f"no {path}")
    rng = random.Random(0)
    same = total = 0
    for i, line in enumerate(path.read_text().splitlines()):
        rec = json.loads(line)
        body, final = rec["answer"].rsplit("####", 1)
        lines = [ln for ln in body.splitlines() if ln.strip()]
        headers = [rng.choice(["How much is left?", "Simplify", "Define a variable", "How many does the",
                               "What is the total?"]) for _ in lines]
        soc = "\n".join(f"{h}{rng.choice([' ** ', '**', ' **'])}{ln}" for h, ln in zip(headers, lines)) + f"\n#### {final}"
        try:
            plain = decompose("gsm8k", str(i), rec)
        except Reject:
            continue
        s = decompose("gsm8k", str(i), {"question": rec["question"], "answer": soc})
        total += 1
        assert s.answer == plain.answer
        for h in ("Simplify", "Define a variable", "How many does the", "**"):
            assert h not in s.response and h not in s.reasoning, (soc, s.reasoning)
        same += s.response == plain.response
    assert total > 1250 and same >= 0.97 * total, (same, total)


@pytest.mark.parametrize("solution", ["12 in total.", "#### 12\nThe answer is: 12", "The answer is: 12", "\\boxed{12}",
                                      "So, she has 12 apples in total.", "12", "Therefore the answer is 12 apples."])
@pytest.mark.parametrize("kind", ["orca_math", "metamathqa"])
def test_answer_only_records_are_no_solution(kind, solution):
    rec = ({"question": "She has 5 and gets 7 apples. How many?", "answer": solution} if kind == "orca_math"
           else {"query": "She has 5 and gets 7 apples. How many?", "response": solution + ("" if "answer" in solution.lower()
                                                                                       else "\nThe answer is: 12")})
    with pytest.raises(NoSolution) as e:
        decompose(kind, "r", rec)
    assert e.value.reason == "no_solution" and e.value.answer == "12"


def test_a_short_worked_solution_is_not_answer_only():
    s = decompose("orca_math", "o", {"question": "She has 5 and gets 7 apples. How many?", "answer": "5 + 7 = 12 apples."})
    assert s.answer == "12"


AQUA = {"question": "An organization decided to raise Rs. 6 lakh by collecting equal contributions from 1200 "
                    "employees. How much did each give?",
        "options": ["A)Rs. 300", "B)Rs. 400", "C)Rs. 500", "D)Rs. 1,200", "E)None of these"],
        "rationale": "Each gives 600000/1200 = Rs. 500.\nAnswer: C", "correct": "C"}


def test_aqua_answer_comes_from_the_correct_option():
    s = decompose("aqua", "a", AQUA)
    assert s.answer == "500" and s.response.endswith("The answer is 500.")
    assert "Answer: C" not in s.reasoning and "six lakh rupees" in speakable(s.question)
    assert option_answer(["A)12 km/hr", "B)20%", "C)$1,250", "D)4.5 hours"], "C") == "1250"
    assert option_answer(["A)12 km/hr", "B)20%"], "B") == "20"
    for bad in ({**AQUA, "correct": "E"}, {**AQUA, "options": ["A)5(\u221a3 + 1)", "B)2", "C)3"], "correct": "A"}):
        with pytest.raises(Reject, match="non_numeric_answer"):
            decompose("aqua", "a", bad)
    with pytest.raises(Reject, match="missing_field"):
        decompose("aqua", "a", {**AQUA, "correct": "F"})
    with pytest.raises(NoSolution):
        decompose("aqua", "a", {**AQUA, "rationale": "Answer: C"})


@pytest.mark.parametrize("text, heard", [
    ("the units digit of 9^3-7", "nine cubed minus seven"), ("Y = X^2 - 4", "X squared minus four"),
    ("It is 89 -90 here", "eighty-nine minus ninety"), ("so x -5 = 2", "x minus five"),
    ("(a+b) -3 = 4", "minus three"),
])
def test_a_minus_after_an_operand_or_power_is_subtraction(text, heard):
    assert heard in said(text)


def test_a_sign_after_a_word_stays_negative():
    assert said("It was -5 degrees") == "It was negative five degrees"


@pytest.mark.parametrize("arrow", ["=>", "==>", " => ", "\u21d2"])
def test_implication_arrow_is_so(arrow):
    s = said(f"2x = 10{arrow}x = 5")
    assert "so x equals five" in s and "greater" not in s, s


@pytest.mark.parametrize("text, heard", [("we get 5sqrt 10", "five times the square root of ten"),
                                         ("sqrt(2) + 1", "the square root of two"),
                                         ("x/3 + 1", "x over three"), ("(1/X)*3", "one over X")])
def test_plain_text_roots_and_variable_fractions(text, heard):
    assert heard in said(text)


def test_numbers_in_a_row_are_not_a_list():
    assert said("36. 48. 84. Percentage is 90.").startswith("thirty-six.")
    assert speakable("1. Buy milk") == "Buy milk"  # a list marker is still dropped


def test_special_tokens_in_a_generated_solution_are_dropped():
    from tasks.synth.solutions import from_generated

    s = from_generated("g", "orca_math", "Tom has 3 apples and buys 4. How many?",
                       "Tom has 3 + 4 = 7 apples.<|im_end|>\nThe answer is: 7<|endoftext|>", "7")
    assert "<|" not in s.reasoning + s.response and s.response.endswith("The answer is 7.")

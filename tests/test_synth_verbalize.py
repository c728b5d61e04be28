"""Desymbolization (golden values) and solution decomposition."""

from __future__ import annotations

import pytest

from tasks.synth.solutions import Reject, collapse_equations, decompose
from tasks.synth.verbalize import clean_response, speakable, unspeakable_chars


@pytest.mark.parametrize("text, spoken", [
    ("It costs $12.50.", "It costs twelve dollars and fifty cents."),
    ("She paid $0.75 and $1 and $80,000.", "She paid seventy-five cents and one dollar and eighty thousand dollars."),
    ("A $1.5 million house", "A one point five million dollars house"),
    ("Eat 3/4 of 1/2 of a pie and 2 1/2 cakes", "Eat three quarters of one half of a pie and two and one half cakes"),
    ("Use 5/8 cup", "Use five eighths cup"),
    ("A 15% tip on 12.5% of 1,234,567", "A fifteen percent tip on twelve point five percent of one million two hundred "
     "and thirty-four thousand five hundred and sixty-seven"),
    ("the 1st and 22nd and 3rd", "the first and twenty-second and third"),
    ("At 3:30 pm and 7:05", "At three thirty p m and seven oh five"),
    ("It is 2.05 kg", "It is two point zero five kg"),
    ("If 3 * 4 = 12 and 10 - 5 = 5", "If three times four equals twelve and ten minus five equals five"),
    ("Kids aged 5-10 drive 60 miles/hour", "Kids aged five to ten drive sixty miles per hour"),
    ("What is $\\frac{3}{4}$ of $x^2 + 2x - 5$?", "What is three quarters of x squared plus two x minus five?"),
    ("Find \\sqrt{16} \\times 3 \\div 2, costing \\$5", "Find the square root of sixteen times three divided by two, costing five dollars"),
    ("It costs 50¢ or €20", "It costs fifty cents or twenty euros"),
])
def test_speakable_golden(text, spoken):
    out = speakable(text)
    assert out == spoken
    assert not unspeakable_chars(out)


def test_speakable_never_leaves_symbols_on_hard_inputs():
    for text in ["x = {a}^{b}_{c} & y < z > w # 5 @ 3", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}",
                 "<<2*3=6>>6 apples", "5 + (3 * 2) / 4 ^ 2", "12345678901234567890 digits", "-5 degrees"]:
        assert not unspeakable_chars(speakable(text)), (text, speakable(text))


def test_clean_response_keeps_digits_and_drops_symbols():
    assert clean_response("She makes $18 every day, 50% more.") == "She makes 18 dollars every day, 50 percent more."
    assert clean_response("He eats 1/2 of it") == "He eats one half of it"
    assert collapse_equations("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs") == "Janet sells 9 duck eggs"
    assert collapse_equations("She makes 9 * 2 = $<<9*2=18>>18 every day").split() == "She makes $18 every day".split()


def test_gsm8k_decomposition():
    rec = {"question": "Josh buys a house for $80,000 and puts in $50,000. How much did he spend?",
           "answer": "He spent 80,000+50,000=$<<80000+50000=130000>>130,000\n#### 130000"}
    s = decompose("gsm8k", "g", rec)
    assert s.reasoning == "He spent 80,000+50,000=$130,000. Answer: 130000."
    assert s.response == "He spent 130000 dollars. The answer is 130000."
    assert "<<" not in s.reasoning


def test_gsm8k_answer_never_derived_is_rejected():
    rec = {"question": "How many minutes in half an hour?", "answer": "Half of an hour is 0.5 hours.\n#### 30"}
    with pytest.raises(Reject, match="answer_not_derived"):
        decompose("gsm8k", "g", rec)


def test_svamp_decomposition_and_wrong_answer():
    rec = {"Body": "Mary had 10 cups of flour and used 3", "Question": "How many are left?",
           "Equation": "( ( 10.0 - 3.0 ) * 2.0 )", "Answer": 14.0}
    s = decompose("svamp", "s", rec)
    assert s.question == "Mary had 10 cups of flour and used 3, how many are left?"
    assert s.reasoning == "10 - 3 = 7. 7 * 2 = 14. Answer: 14."
    assert s.response == "First, 10 minus 3 is 7. Then 7 times 2 is 14. The answer is 14."
    assert s.kind == "multi_step"
    with pytest.raises(Reject, match="equation_mismatch"):
        decompose("svamp", "s", {**rec, "Answer": 15.0})
    with pytest.raises(Reject, match="bad_equation"):
        decompose("svamp", "s", {**rec, "Equation": "__import__('os')"})

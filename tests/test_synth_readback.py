"""Numbers keep their value when spoken: the words-to-number reader, and speakable() read back.

Every case is written here (no public data): one per class the issue names, each with the value a
person reads in the source, the words we expect, and the wrong speaking the reader must catch.
"""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from tasks.synth.readback import mismatch, values
from tasks.synth.verbalize import speakable, unspeakable_chars


def n(*xs) -> dict:
    return {("n", F(x)): 1 for x in xs}


def t(*hm: str) -> dict:
    out = {}
    for s in hm:
        h, m = s.split(":")
        out[("t", F(int(h) * 60 + int(m)))] = 1
    return out


# (source text, the values a person reads in it, words speakable() must produce, a wrong speaking)
CASES = [
    ("A kurta costs Rs.360.", n(360), "A kurta costs three hundred and sixty rupees.",
     "A kurta costs Rs zero point three six zero."),
    ("Bus No.5 leaves early.", n(5), "Bus number five leaves early.", "Bus No zero point five leaves early."),
    ("The house costs $400 000.", n(400000), "The house costs four hundred thousand dollars.",
     "The house costs four hundred dollars zero."),
    ("A salary of 12,450 dollars", n(12450), "A salary of twelve thousand four hundred and fifty dollars",
     "A salary of twelve, four hundred and fifty dollars"),
    ("It rose 12 1/2% this year.", n("12.5"), "It rose twelve and one half percent this year.",
     "It rose twelve one per two percent this year."),
    ("Use 1\u20442 cup of milk.", n("0.5"), "Use one half cup of milk.", "Use one two cup of milk."),
    ("Pour 2\u00bd liters.", n("2.5"), "Pour two and one half liters.", "Pour two one half liters."),
    ("He ate 1/3rd of it and 2/5th of the rest.", n(F(1, 3), F(2, 5)),
     "He ate one third of it and two fifths of the rest.", "He ate one three rd of it and two five th of the rest."),
    ("The shop opens at 16:00.", t("16:00"), "The shop opens at four p m.", "The shop opens at sixteen zero zero."),
    ("Open 1:00 PM - 6:00 PM daily.", t("13:00", "18:00"), "Open one p m to six p m daily.", "Open one p m daily."),
    ("The train left at 7:05 and came at 9:45.", t("7:05", "9:45"),
     "The train left at seven oh five and came at nine forty-five.", "The train left at seven five and came at nine."),
    ("The ratio of boys to girls is 7:11.", n(7, 11), "The ratio of boys to girls is seven to eleven.", None),
    ("It was -5 degrees at night.", n(-5), "It was negative five degrees at night.", "It was five degrees at night."),
    ("He paid $8 dollars.", n(8), "He paid eight dollars.", "He paid eight dollars dollars and one."),
    ("A pen costs $0.50 cents.", n("0.5"), "A pen costs fifty cents.", "A pen costs fifty."),
    ("A cake costs $12.50.", n("12.5"), "A cake costs twelve dollars and fifty cents.",
     "A cake costs twelve dollars and five cents."),
    ("A $1.5 million house", n(1500000), "A one point five million dollars house", "A one point five dollars house"),
    ("She came 22nd of 40.", n(22, 40), "She came twenty-second of forty.", "She came twenty, second of forty."),
    ("Scores were 92, 100 and 86.", n(92, 100, 86), "Scores were ninety-two, one hundred, and eighty-six.",
     "Scores were ninety-two, one hundred and eighty-six."),
    ("He bought 7 45-cent stamps.", n(7, "0.45"), "He bought seven, forty-five cent stamps.",
     "He bought seven forty-five stamps."),
    ("She has four $20 bills.", n(4, 20), "She has four twenty-dollar bills.", "She has twenty-dollar bills."),
    ("There are 500 third graders.", n(500, 3), "There are five hundred, third graders.",
     "There are five hundred third graders."),
    ("Her ad runs 30 seconds, his a 45-second spot.", n(30, 45), "Her ad runs thirty seconds, his a forty-five second spot.",
     "Her ad runs thirty seconds, his a forty-second spot."),
    ("He ate 1/100 of the cake.", n(F(1, 100)), "He ate one over one hundred of the cake.", "He ate one hundredth of the cake."),
    ("She buys four 12-pound boxes.", n(4, 12), "She buys four, twelve pound boxes.", None),
    ("She checks 20 second graders.", n(20, 2), "She checks twenty, second graders.", "She checks twenty second graders."),
    ("The tiles on the ceiling--38.", n(38), "The tiles on the ceiling thirty-eight.", "The tiles on the ceiling negative thirty-eight."),
    ("He earns 2.5 cents a drum.", n("0.025"), "He earns two point five cents a drum.", "He earns two. five cents a drum."),
    ("He trips 40% percent of mornings.", n(40), "He trips forty percent of mornings.", "He trips forty percent percent and two."),
    ("Lunch is 560 and dinner 780 calories, 60 and 7 more.", n(560, 780, 60, 7),
     "Lunch is five hundred and sixty and dinner seven hundred and eighty calories, sixty, and seven more.",
     "Lunch is five hundred and sixty and dinner seven hundred and eighty calories, sixty and seven more."),
]


@pytest.mark.parametrize("source, want, words, wrong", CASES, ids=[c[0][:30] for c in CASES])
def test_number_classes_read_back(source, want, words, wrong):
    assert dict(values(source, spoken=False)) == want
    said = speakable(source)
    assert said == words
    assert not unspeakable_chars(said)
    # Numbers said side by side may be a clock time or not ("four twenty-dollar bills"): either reading.
    assert want in (dict(values(said, spoken=True)), dict(values(said, spoken=False)))
    assert mismatch(source, said) == ""
    if wrong:
        assert mismatch(source, wrong) != "", wrong  # the reader hears the old, wrong speaking


@pytest.mark.parametrize("source, words", [
    ("Find x - y if x = 5 and y = 2.", "Find x minus y if x equals five and y equals two."),
    ("If M-3 = 7, what is M?", "If M minus three equals seven, what is M?"),
    ("Say what x - y is when both are known.", "Say what x minus y is when both are known."),  # no "=" about
    ("What is \u221a16 + \u221a(x+9)?", "What is the square root of sixteen plus the square root of the quantity x plus nine?"),
    ("Find |x - 3| + 2 when x = -1.", "Find the absolute value of the quantity x minus three, plus two when x equals negative one."),
    ("What is (3 + 4) * 5?", "What is the quantity three plus four, times five?"),
    ("Solve 2(x+1) = 8.", "Solve two times the quantity x plus one, equals eight."),
    ("Expand (x+1)(x-1).", "Expand the quantity x plus one, times the quantity x minus one."),
    ("If 3x = 12, find x^2.", "If three x equals twelve, find x squared."),
    ("What is 2^10 / 4?", "What is two to the power of ten divided by four?"),
    ("He has $x and spends $5.", "He has x dollars and spends five dollars."),
    ("Compute 12 / 4 and 3/4.", "Compute twelve divided by four and three quarters."),
])
def test_math_stays_math(source, words):
    said = speakable(source)
    assert said == words
    assert mismatch(source, said) == ""


def test_prose_dashes_and_hyphens_stay_prose():
    assert speakable("She bought apples - red ones - for the pie.") == "She bought apples, red ones, for the pie."
    assert speakable("Kids aged 5-10 wore a T-shirt and used e-mail.") == \
        "Kids aged five to ten wore a T-shirt and used e-mail."


def test_reader_understands_words_and_digits_alike():
    assert values("three quarters and twelve and a half") == values("3/4 and 12 1/2")
    assert values("one point five million dollars") == values("$1,500,000")
    assert values("twelve dollars and fifty cents") == values("12.50 dollars") == values("$12.50")
    assert values("four p m", spoken=True) == values("4 pm") == values("16:00")
    assert values("seven forty-five", spoken=True) == values("7:45")
    assert values("x minus five") == values("x - 5") == n(5)
    assert values("negative five") == values("-5") == n(-5)
    assert values("twenty fourth graders") == n(24)  # the words themselves say 24th
    assert values("20 fourth graders") == n(20, 4)


def test_mismatch_names_what_was_lost():
    msg = mismatch("It costs Rs.360.", "It costs zero point three six zero rupees.")
    assert "360" in msg and "0.36" in msg
    assert mismatch("Tom has 3 apples.", "Tom has three apples.") == ""
    assert mismatch("Tom has 3 apples.", "Tom has apples.") != ""
    assert mismatch("Tom has 3 apples.", "Tom has three apples and three pears.") != ""  # extra values count too

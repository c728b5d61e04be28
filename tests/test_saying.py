"""How long a voice takes to say a response's tokens (models/saying.py): a number in digits is held for
the time its words take, shared among its tokens, and known only once it has ended.

    .venv/bin/python -m pytest tests/test_saying.py -q
"""

from __future__ import annotations

import pytest

from models.saying import SaidDurations, number_runs, number_seconds, said_durations, said_seconds, speaking_seconds


def test_a_number_takes_as_long_as_its_words():
    assert number_seconds("3162") == pytest.approx(speaking_seconds("three thousand, one hundred and sixty-two"))
    assert number_seconds("176286") > 1.2 * 6 * said_seconds("7")  # longer than 0.45 s a digit
    assert number_seconds("1,200") == pytest.approx(speaking_seconds("one thousand two hundred"))
    assert number_seconds("3.50") == pytest.approx(number_seconds("3.5"))
    assert number_seconds("3.5") > number_seconds("3")
    assert number_seconds("12345678901234567890") > 0  # past num2words' sense: digit by digit
    for bad in ("", "1.2.3", "x1", ".5", "²"):
        with pytest.raises(ValueError, match="not a number"):
            number_seconds(bad)


def test_the_tokens_of_a_number_share_its_words_time():
    texts = ["It", " is", " ", "3", "1", "6", "2", " apples", "."]
    got = said_durations(texts)
    assert sum(got[3:7]) == pytest.approx(number_seconds("3162"))
    assert got[3] == got[4] == got[5] == got[6]
    others = [0, 1, 2, 7, 8]
    assert [got[i] for i in others] == [said_seconds(texts[i]) for i in others]
    assert said_durations(texts, numbers=False) == [said_seconds(t) for t in texts]  # 0.45 s a digit


@pytest.mark.parametrize("texts, numbers", [
    (["is", " ", "4", "2", "."], ["42"]),                        # the sentence's full stop is not a decimal point
    (["1", ",", "2", "0", "0", " cats"], ["1,200"]),             # thousands comma inside
    (["3", ".", "5", " kg"], ["3.5"]),                           # decimal point inside
    (["1", None, "2", " more"], ["12"]),                         # a pad inside a number does not cut it
    (["1", " ", "2"], ["1", "2"]),                               # a space does
    (["7", ",", " ", "8"], ["7", "8"]),                          # a comma then a space: a list
])
def test_where_a_number_ends(texts, numbers):
    got = said_durations(texts)
    digits = [i for i, t in enumerate(texts) if t is not None and t.isdigit()]
    assert sum(got[i] for i in digits) + sum(
        got[i] for i, t in enumerate(texts) if t in (",", ".") and 0 < i < len(texts) - 1
        and texts[i - 1].isdigit() and (texts[i + 1] or "").isdigit()
    ) == pytest.approx(sum(number_seconds(n) for n in numbers))
    assert all(got[i] == 0.0 for i, t in enumerate(texts) if t is None)


def test_a_stream_learns_a_numbers_time_when_it_ends():
    d = SaidDurations()
    assert d.push("It") == [(0, said_seconds("It"))]
    assert d.push("4") == [] and d.push(None) == [(2, 0.0)] and d.push("7") == [] and d.push(".") == []
    out = d.push(" The")  # now "47" has ended; its full stop and this word are said after it
    assert [i for i, _ in out] == [1, 3, 4, 5]
    assert out[0][1] + out[1][1] == pytest.approx(number_seconds("47"))
    assert out[2][1] == said_seconds(".") and out[3][1] == said_seconds(" The")
    assert d.push("9") == [] and d.push("9") == []
    assert d.flush() == [(6, number_seconds("99") / 2), (7, number_seconds("99") / 2)]  # the response ended
    assert d.flush() == []
    assert said_durations(["1", ".", "2", ".", "3"]) == [said_seconds(t) for t in "1.2.3"]  # no number: as before


@pytest.mark.parametrize("texts, runs", [
    (["It", " is", " ", "3", "1", "6", "2", " apples", "."], [[3, 4, 5, 6]]),
    (["is", " ", "4", "2", "."], [[2, 3]]),                      # the full stop is not the number's
    (["1", ",", "2", "0", "0", " cats"], [[0, 1, 2, 3, 4]]),
    (["1", None, "2", " more"], [[0, 2]]),                       # a pad says nothing and does not cut it
    (["7", ",", " ", "8"], [[0], [3]]),
    (["no", " numbers"], []),
])
def test_number_runs_group_as_the_stream_does(texts, runs):
    assert number_runs(texts) == runs
    # the tokens SaidDurations holds until a number ends are exactly these runs (and a trailing separator)
    d, held = SaidDurations(), []
    for k, t in enumerate(texts):
        if not d.push(t):
            held.append(k)
    in_runs = {k for r in runs for k in r}
    assert in_runs <= set(held) and all(texts[k] in (",", ".") for k in set(held) - in_runs)


def test_own_seconds_replace_the_estimate_and_numbers_take_their_scale():
    """talker.seconds: learned. A token's own (learned) seconds are what it takes; a number's tokens share
    its words' time times ``number_scale``; an unreadable number is said token by token at their own seconds.
    Breakages: own seconds ignored, or the scale left out, fail here."""
    texts = ["It", " is", " ", "3", "1", " apples", "."]
    own = [0.5, 0.25, 0.0, 9.0, 9.0, 0.75, 0.4]
    got = said_durations(texts, seconds=own, number_scale=1.5)
    assert [got[i] for i in (0, 1, 2, 5, 6)] == [0.5, 0.25, 0.0, 0.75, 0.4]
    assert got[3] + got[4] == pytest.approx(1.5 * number_seconds("31"))  # not 9 + 9: a number is its words
    plain = said_durations(texts, seconds=own)
    assert plain[3] + plain[4] == pytest.approx(number_seconds("31"))
    assert said_durations(texts, numbers=False, seconds=own) == own  # digits: each token its own seconds
    assert said_durations(["1", ".", "2", ".", "3"], seconds=[1, 2, 3, 4, 5], number_scale=2.0) == [1, 2, 3, 4, 5]
    assert said_durations(texts, seconds=[None] * len(texts)) == said_durations(texts)  # None: the estimate
    with pytest.raises(ValueError, match="number_scale"):
        SaidDurations(number_scale=0.0)


def test_spoken_spans_last_until_the_next_spoken_token_starts():
    """A response's timing as the talker's aligned frames and learned seconds read it: tokens that say
    nothing get no span, a spoken token ends where the next spoken one starts, the last at the speech's end,
    and a start out of order never makes a span negative. Breakage tried: without the running end the
    out-of-order case gives (2, 0.3, 0.25) and fails."""
    from models.saying import spoken_spans

    starts = [0.0, 0.1, 0.3, 0.25, 0.5]
    spoken = [True, False, True, True, True]
    assert spoken_spans(starts, spoken, 0.9) == [(0, 0.0, 0.3), (2, 0.3, 0.3), (3, 0.25, 0.5), (4, 0.5, 0.9)]
    assert spoken_spans([0.0, 0.4], [True, True], 1.0) == [(0, 0.0, 0.4), (1, 0.4, 1.0)]
    assert spoken_spans([0.0, 0.4], [False, False], 1.0) == []
    assert all(end >= start for _, start, end in spoken_spans([0.5, 0.2, 0.1], [True] * 3, 0.3))

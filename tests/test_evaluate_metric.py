"""AudioBench's Spoken-MQA scoring (tasks/evaluate/metric.py): each case is AudioBench's result for
that input (answer_clean gsm8k mode + compare_answer_with_groundtruth), quirks included."""

from __future__ import annotations

import time

import pytest

from tasks.evaluate.metric import (
    delete_extra_zero,
    extract_answer,
    is_correct,
    normalize_answer,
    reference_answers,
    spoken_words,
)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        # commas are thousands separators, dropped before numbers are found
        ("The answer is 1,234.", "1234"),
        ("She has 12,000,000 coins", "12000000"),
        # trailing zeros go through float: 12.50 -> 12.5, 5.0 -> 5, 100.000 -> 100
        ("The answer is 12.50", "12.5"),
        ("The answer is 5.0.", "5"),
        ("The answer is 100.000", "100"),
        ("It costs $18.00", "18"),
        # negatives keep their sign; -0 becomes 0
        ("The answer is -7.", "-7"),
        ("The temperature fell to -3.50 degrees", "-3.5"),
        ("The answer is -0", "0"),
        # a/b is evaluated; a zero denominator (and Python-invalid literals like 007) stay as written
        ("The answer is 3/4.", "0.75"),
        ("The answer is 10/2", "5"),
        ("The answer is 1/3", "0.3333333333333333"),
        ("The answer is 3/0", "3/0"),
        ("The answer is 007/2", "007/2"),
        ("The answer is 3/", "3"),  # trailing "/" stripped
        # "The answer is:" and "####" are triggers too
        ("Let me see. The answer is: 42", "42"),
        ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("#### 1,000", "1000"),
        ("the answer is 7 and then 9", "7"),
        # triggers are case-sensitive: no trigger -> the last number of the output
        ("THE ANSWER IS 7 and then 9", "9"),
        # first number after a trigger vs last number of the output
        ("The answer is 18 dollars, 2 more than 16.", "18"),
        ("She makes 18 dollars, 2 more than 16.", "16"),
        ("3 + 4 = 7, so the answer is 7. That is 3 more than 4.", "7"),
        # a trigger twice in one paragraph: the text after the LAST trigger counts ...
        ("The answer is 5. The answer is 6.", "6"),
        # ... but with a blank line, only the first paragraph is read (AudioBench's few-shot guard)
        ("The answer is 5.\n\nThe answer is 6.", "5"),
        # the guard counts each trigger on its own: one "The answer is:" and one "####" is not "twice",
        # so the last trigger wins even across paragraphs
        ("The answer is: 5\n\n#### 6", "6"),
        # a trigger twice with a preamble: only the first paragraph, "Step 1.", is read
        ("Step 1.\n\nThe answer is: 5\n\nThe answer is: 6", "1"),
        # surprising, mirrored: ".5" is found as "5" (the regex needs a digit before the dot)
        ("The answer is .5", "5"),
        ("It is 1.5.3 now", "3"),
        # surprising, mirrored: from 1e16 str(float) is in exponent notation, and stripping the
        # trailing zeros of "1e+20" leaves "1e+2", i.e. 100.0
        ("The answer is 100000000000000000000", "100.0"),
        ("The answer is 12345678901234567890", "1.2345678901234567e+19"),
        # leading/trailing newlines are stripped
        ("\n\nThe answer is 9\n\n", "9"),
        # no number at all, and numbers in words: nothing to extract
        ("I do not know.", None),
        ("The answer is five.", None),
        ("", None),
    ],
)
def test_extract_answer(output: str, expected: str | None) -> None:
    assert extract_answer(output) == expected


def test_no_number_and_words_are_wrong() -> None:
    assert not is_correct("The answer is five.", "5", "single_step_reasoning")
    assert not is_correct("Twelve plus seven is nineteen.", "19", "short_digit")
    assert not is_correct("", "0", "multi_step_reasoning")
    assert not is_correct(None, "5", "short_digit")


@pytest.mark.parametrize(
    ("output", "gold", "split", "correct"),
    [
        ("Twelve plus seven is 19. The answer is 19.", "19", "short_digit", True),
        ("The answer is 1,002.", "1002", "short_digit", True),
        ("The answer is -661", "-661", "short_digit", True),
        ("The answer is 20", "19", "short_digit", False),
        # arithmetic splits compare the gold text as it is: a gold with a trailing zero or a comma
        # can never match (AudioBench's spokenmqa_dataset_arithmatic does not normalise it) ...
        ("The answer is 12.50", "12.50", "long_digit", False),
        ("The answer is 1,000", "1,000", "short_digit", False),
        # ... the reasoning splits normalise it like the prediction
        ("The answer is 12.50", "12.50", "single_step_reasoning", True),
        ("The answer is 0.75", "3/4", "single_step_reasoning", True),
        # reasoning golds come as lists; "#### N" solutions are read after "#### "
        ("The answer is 72.", ["72"], "multi_step_reasoning", True),
        ("The answer is 72.", ["Natalia sold 48 + 24 = 72 clips.\n#### 72"], "multi_step_reasoning", True),
        ("The answer is 1234", ["So she has\n#### 1,234"], "multi_step_reasoning", True),
        # "####72" without the space is not split off by AudioBench, so it never matches
        ("The answer is 72.", ["####72"], "multi_step_reasoning", False),
        # only the first reference can match (AudioBench's second-reference branch always fails)
        ("The answer is 8", ["7", "8"], "multi_step_reasoning", False),
        ("The answer is 7", ["7", "8"], "multi_step_reasoning", True),
        # the exponent quirk applies to the gold too, so the two huge numbers still match there
        ("The answer is 100000000000000000000", "100000000000000000000", "single_step_reasoning", True),
        ("The answer is 100000000000000000000", "100000000000000000000", "short_digit", False),
        # gsm8k / svamp / no split: normalised like the reasoning splits
        ("#### 18", "18.0", "gsm8k", True),
        ("The answer is 18", "18.0", None, True),
    ],
)
def test_is_correct(output: str, gold, split: str | None, correct: bool) -> None:
    assert is_correct(output, gold, split) is correct


def test_normalize_answer() -> None:
    assert normalize_answer("72") == "72"
    assert normalize_answer("72.0") == "72"
    assert normalize_answer("9.80") == "9.8"
    assert normalize_answer("#### 1,234") == "1234"
    assert normalize_answer("3/4") == "0.75"
    assert reference_answers("12.50", "short_digit") == ["12.50"]
    assert reference_answers(["12.50", "3"], "multi_step_reasoning") == ["12.5", "3"]
    # AudioBench crashes on a reasoning gold that evaluates to a tuple; we say why instead
    with pytest.raises(ValueError, match="1,000"):
        normalize_answer("1,000")
    with pytest.raises(TypeError, match="must be a string"):
        normalize_answer(72)  # type: ignore[arg-type]


def test_strings_are_never_run_as_code() -> None:
    # AudioBench eval()s a string float() rejects; we evaluate only arithmetic and return the rest
    # unchanged, so a gold or an output can neither run code nor hang on a huge power.
    assert delete_extra_zero("__import__('os').getcwd()") == "__import__('os').getcwd()"
    t0 = time.perf_counter()
    assert delete_extra_zero("9**9**9**9") == "9**9**9**9"
    assert time.perf_counter() - t0 < 1.0
    assert delete_extra_zero("(1, 0)") is None  # a tuple: None, as AudioBench's function returns


def test_long_predictions_are_cut_to_100_chars() -> None:
    # compute_score keeps the first 100 characters of a prediction; "3/0" + digits survives
    # delete_extra_zero unchanged, so a 120-char one is cut and no longer equals itself.
    long = "3/0" + "1" * 117
    assert extract_answer(f"The answer is {long}") == long
    assert is_correct(f"The answer is {long}", long[:100], "single_step_reasoning")
    assert not is_correct(f"The answer is {long}", long, "short_digit")


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("Twelve plus seven is 19. The answer is 19.", 9),
        ("Giving away 18 of 45 leaves twenty-seven books - done.", 9),
        ("", 0),
        ("  ...  ", 0),
    ],
)
def test_spoken_words(text: str, n: int) -> None:
    assert spoken_words(text) == n

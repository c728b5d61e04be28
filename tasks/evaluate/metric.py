"""Score answers exactly as AudioBench scores Spoken-MQA, and count spoken words.

The reference is AudioBench (``AudioLLMs/AudioBench``): ``answer_clean("gsm8k", triggers, output)``
and ``compare_answer_with_groundtruth`` in ``src/dataset_src/math_utils/utils.py``, called by the two
Spoken-MQA classes in ``src/dataset_src/spoken_mqa.py``. This is our own implementation of that
behaviour, quirks included (each quirk is named where it happens and pinned by a test in
tests/test_evaluate_metric.py):

1. extraction (``extract_answer``): strip leading/trailing newlines; if any trigger occurs more than
   once, keep the text before the first blank line; split on the triggers and keep what follows the
   last one; strip trailing ``.``/``/``/spaces; drop commas; find numbers ``-?\\d+/?\\.?\\d*``; give
   each the float round trip of ``delete_extra_zero`` (``a/b`` evaluated, ``12.50`` -> ``12.5``,
   ``5.0`` -> ``5``); take the first number after a trigger, else the last number of the output;
2. the gold (``reference_answers``): the arithmetic splits (``short_digit``, ``long_digit``) compare
   the dataset's answer text as it is; every other split normalises each reference like the
   prediction (after ``####`` when present);
3. comparison: case-insensitive string equality with the first reference. No number is wrong;
   numbers in words never match.

    python -m tasks.evaluate.metric "Twelve plus seven is 19. The answer is 19." 19 short_digit
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Sequence

# AudioBench's get_seperation_trigger("gsm8k"). It joins them into a regex unescaped; none of them
# holds a regex metacharacter, so escaping changes nothing.
TRIGGERS = ("The answer is:", "The answer is", "the answer is", "####")
_TRIGGER_RE = re.compile("|".join(re.escape(t) for t in TRIGGERS))
_NUMBER_RE = re.compile(r"-?\d+/?\.?\d*")
# spokenmqa_dataset_arithmatic compares the raw answer text; spokenmqa_dataset_reasoning normalises it.
ARITHMETIC_SPLITS = frozenset({"short_digit", "long_digit"})
MAX_PREDICTION_CHARS = 100  # compute_score cuts longer predictions
EMPTY = "empty"  # what compute_score puts in place of a missing prediction or gold
_CHOICES = ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)")


class _NotArithmetic(ValueError):
    pass


_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)


def _check_arithmetic(node: ast.AST) -> None:
    """Only numbers, + - * / // %, unary signs and tuples: what ``eval`` of a number-like string can
    meet. Names, calls and ``**`` (unbounded work) are refused instead of evaluated."""
    if isinstance(node, ast.Expression):
        _check_arithmetic(node.body)
    elif isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise _NotArithmetic(repr(node.value))
    elif isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS):
        _check_arithmetic(node.left)
        _check_arithmetic(node.right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _check_arithmetic(node.operand)
    elif isinstance(node, ast.Tuple):
        for elt in node.elts:
            _check_arithmetic(elt)
    else:
        raise _NotArithmetic(type(node).__name__)


def _eval_arithmetic(text: str) -> object:
    # eval() strips leading/trailing spaces and tabs of a string source; ast.parse does not.
    tree = ast.parse(text.strip(" \t"), mode="eval")
    _check_arithmetic(tree)
    return eval(compile(tree, "<answer>", "eval"), {"__builtins__": {}}, {})  # noqa: S307 - checked above


def delete_extra_zero(text: str) -> str | None:
    """AudioBench's ``delete_extra_zero``: a number string through ``float`` and back.

    ``"12.50"`` -> ``"12.5"``, ``"5.0"`` -> ``"5"``, ``"-0"`` -> ``"0"``, ``"3/4"`` -> ``"0.75"``
    (``float`` fails, the string is evaluated). A string neither converts nor evaluates comes back
    unchanged (``"3/0"``, ``"007/2"``); one that evaluates to something else than a number (``"1,000"``
    is the tuple ``(1, 0)``) gives ``None``, as AudioBench's function falls off its end there.
    Quirks kept on purpose: ``str(float)`` switches to exponent notation from 1e16, and stripping
    zeros off that exponent changes the value: ``"100000000000000000000"`` -> ``"100.0"``.
    """
    try:
        value: object = float(text)
    except (TypeError, ValueError):
        try:
            value = _eval_arithmetic(text)
        except Exception:  # noqa: BLE001 - AudioBench returns the input on any failure
            return text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        s = str(value).rstrip("0")
        return str(int(s.rstrip("."))) if s.endswith(".") else str(float(s))
    return None


def extract_answer(output: str) -> str | None:
    """The answer AudioBench reads from a model output (``answer_clean`` in gsm8k mode), or ``None``
    when the output holds no number (AudioBench then scores the string "empty": wrong)."""
    text = output.strip("\n")
    # Two triggers (counted separately: "The answer is: 5" counts once for "The answer is:" and once
    # for "The answer is") mean a few-shot echo to AudioBench: only the first paragraph counts. Without
    # a blank line that paragraph is the whole output.
    if any(text.count(t) > 1 for t in TRIGGERS):
        text = text.split("\n\n")[0]
    parts = _TRIGGER_RE.split(text)
    after_trigger = len(parts) > 1
    if after_trigger:
        text = parts[-1]
    text = text.strip("\n").rstrip(".").rstrip("/").strip(" ")
    numbers = [delete_extra_zero(m) for m in _NUMBER_RE.findall(text.replace(",", ""))]
    if not numbers:
        return None
    # After a trigger the first number counts ("The answer is 5 apples, not 6" -> 5); without one
    # the last number of the whole output does.
    pred = numbers[0] if after_trigger else numbers[-1]
    assert pred is not None  # a regex match never evaluates to a tuple (commas are gone)
    return pred.rstrip(".").rstrip("/") or None


def normalize_answer(gold: str) -> str:
    """One gold answer as spokenmqa_dataset_reasoning normalises it: the number after ``"#### "`` if
    the text has ``####`` (commas dropped), then ``delete_extra_zero``. Raises ``ValueError`` for a
    gold AudioBench cannot score (it would crash), e.g. ``"1,000"`` without ``####``."""
    if not isinstance(gold, str):
        raise TypeError(f"a gold answer must be a string, got {type(gold).__name__} {gold!r}")
    ans: str | None = gold
    if "####" in gold:
        # AudioBench splits on "#### " with the space: "####72" keeps its text and never matches.
        ans = delete_extra_zero(gold.split("#### ")[-1].replace(",", ""))
    if ans is not None:
        ans = delete_extra_zero(ans)
    if ans is None:
        raise ValueError(
            f"gold answer {gold!r} does not normalise to a number the way AudioBench reads it "
            "(it evaluates to a tuple, e.g. a thousands separator); write it as a plain number"
        )
    return ans


def reference_answers(gold: str | Sequence[str], split: str | None = None) -> list[str]:
    """The reference strings AudioBench compares a prediction with, for one item of ``split``.

    ``gold`` is the dataset's ``answer.text``: a string or a list of strings. Arithmetic splits keep it
    as it is (so a gold ``"12.50"`` can never match: the prediction is always normalised); the others
    (``split=None`` included) normalise each entry with :func:`normalize_answer`.
    """
    golds = [gold] if isinstance(gold, str) else list(gold)
    if split in ARITHMETIC_SPLITS:
        return [str(g) for g in golds] if gold else [EMPTY]
    refs = [normalize_answer(g) for g in golds]
    return refs or [EMPTY]


def _compare(answer: str, truth: str) -> bool:
    """``compare_answer_with_groundtruth(answer, truth)``: strip ``\\text{``, multiple-choice letters
    by containment, else case-insensitive equality."""
    if "\\text{" in answer:
        answer = answer.replace("\\text{", "").rstrip("}")
    if "\\text{" in truth:
        truth = truth.replace("\\text{", "").rstrip("}")
    if truth.lower() in _CHOICES:
        return truth.lower() in answer.lower()
    return answer.lower() == truth.lower()


def is_correct(output: str | None, gold: str | Sequence[str], split: str | None = None) -> bool:
    """Whether AudioBench counts ``output`` correct for gold ``gold`` (``answer.text``) of ``split``.

    Only the first reference can match: AudioBench passes a second one as ``groundtruth_num``, whose
    branch evaluates the prediction as a list and fails for every number (with three or more it
    raises TypeError). ``output=None`` is wrong (AudioBench would reuse the previous item's
    prediction there, a bug not worth copying).
    """
    if output is None:
        return False
    pred = (extract_answer(output) or EMPTY)[:MAX_PREDICTION_CHARS]
    return _compare(pred, reference_answers(gold, split)[0])


def exact_number(output: str | None, gold: str | Sequence[str], split: str | None = None) -> bool:
    """Stricter than AudioBench: the output must state its answer after a trigger ("The answer is"),
    and that number must equal the gold; an output without a trigger is wrong even when its last
    number matches."""
    if not output or not _TRIGGER_RE.search(output):
        return False
    pred = extract_answer(output)
    return pred is not None and pred == reference_answers(gold, split)[0]


# How a benchmark scores an answer (``Benchmark.scoring``): AudioBench's math rule unless it says otherwise.
SCORERS = {"audiobench_math": is_correct, "exact_number": exact_number}


def scorer(name: str):
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scoring {name!r}; use one of {sorted(SCORERS)}") from None


def spoken_words(text: str) -> int:
    """Words in a spoken response: whitespace-separated tokens holding a letter or digit (``"19"`` and
    ``"twenty-one"`` are one word each, a lone ``"-"`` is none)."""
    return sum(1 for tok in text.split() if any(ch.isalnum() for ch in tok))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m tasks.evaluate.metric OUTPUT GOLD [SPLIT]")
    out, gold_text = sys.argv[1], sys.argv[2]
    split_name = sys.argv[3] if len(sys.argv) > 3 else None
    print(f"extracted: {extract_answer(out)!r}  reference: {reference_answers(gold_text, split_name)[0]!r}  "
          f"correct: {is_correct(out, gold_text, split_name)}  spoken words: {spoken_words(out)}")

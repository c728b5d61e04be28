"""Source records -> (question, reasoning trace, concise spoken response, answer).

One function per source format. The reasoning keeps the source's steps (symbols allowed, GSM8K's
``<<a=b>>`` calculator marks removed) and ends with ``Answer: N.``; the response restates the last
step(s) in words, with numbers as digits, and ends "The answer is N.". A record that cannot be
turned into a verified sample raises :class:`Reject` with a short reason that the stage counts.
"""

from __future__ import annotations

import ast
import math
import re

from models.drift import normalize_number, numbers
from tasks.synth.builtin import Problem
from tasks.synth.verbalize import NUM, clean_response

RESPONSE_WORDS = 40  # budget for the restated steps; "The answer is N." comes on top


class Reject(Exception):
    """A record that does not become a sample; ``reason`` is the counted key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# A decomposed record has the same fields as a built-in problem.
TextSample = Problem


_NUMBER_ONLY = re.compile(r"-?(?:" + NUM + r")")


def parse_answer(text: object) -> str:
    """A dataset's final answer as a normalized number, or Reject('non_numeric_answer')."""
    if isinstance(text, bool) or text is None:
        raise Reject("non_numeric_answer", repr(text))
    if isinstance(text, (int, float)):
        if isinstance(text, float) and not math.isfinite(text):
            raise Reject("non_numeric_answer", repr(text))
        return fmt(float(text))
    s = str(text).strip().rstrip(".").replace("$", "").replace("\\%", "").replace("%", "").strip()
    s = re.sub(r"^\\boxed\{(.*)\}$", r"\1", s).strip()
    if not _NUMBER_ONLY.fullmatch(s):
        raise Reject("non_numeric_answer", s[:40])
    return normalize_number(s)


def fmt(x: float) -> str:
    """A computed value as the digits we write: integers plain, else up to 4 decimals."""
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    return normalize_number(f"{x:.4f}")


def _sentences(text: str) -> list[str]:
    parts = []
    for line in text.splitlines():
        parts += re.split(r"(?<=[.!?])\s+(?=[A-Z])", line.strip())
    return [p.strip() for p in parts if p.strip()]


def _finish(s: str) -> str:
    s = s.strip()
    if not s:
        return s
    s = s[0].upper() + s[1:]
    return s if s[-1] in ".!?" else s + "."


def _concise(steps: list[str], answer: str, budget: int = RESPONSE_WORDS) -> str:
    """The last step(s), spoken, within ``budget`` words, then "The answer is N."."""
    chosen: list[str] = []
    used = 0
    for step in reversed(steps):
        s = _finish(clean_response(collapse_equations(step)))
        n = len(s.split())
        if n < 3 or used + n > budget:
            if chosen or n < 3:
                continue
            break
        chosen.insert(0, s)
        used += n
        if len(chosen) == 2:
            break
    chosen.append(f"The answer is {answer}.")
    return " ".join(chosen)


# "16 - 3 - 4 = 9", "9 * 2 = $18", "80,000*1.5=120,000", "(2+3) x 4 = 20" -> the last side.
_OPERAND = r"[$€£]?\s*\(*\s*-?(?:" + NUM + r")\s*%?\s*\)*"
_EXPR = _OPERAND + r"(?:\s*[-+*/x×÷]\s*" + _OPERAND + r")*"
_EQUATION = re.compile(r"(" + _EXPR + r")(?:\s*=\s*(" + _EXPR + r"))+")


def collapse_equations(text: str) -> str:
    """Keep only the result of each worked equation: "She makes 9 * 2 = $18" -> "She makes $18"."""
    text = re.sub(r"<<[^>]*>>", "", text)

    def last_side(m: re.Match) -> str:
        return " " + m.group(0).rsplit("=", 1)[1].strip() + " "

    return _EQUATION.sub(last_side, text)


def _reasoning(steps: list[str], answer: str) -> str:
    body = " ".join(_finish(re.sub(r"<<[^>]*>>", "", s)) for s in steps)
    return f"{body} Answer: {answer}.".strip()


def _require_derived(question: str, reasoning_body: str, answer: str) -> None:
    """The answer must be a number the solution (or the question) states: else it was never derived."""
    have = {n for n, _, _ in numbers(reasoning_body)} | {n for n, _, _ in numbers(question)}
    if answer not in have:
        raise Reject("wrong_answer", f"answer {answer} appears nowhere in the solution")


def _text(rec: dict, key: str) -> str:
    v = rec.get(key)
    if not isinstance(v, str) or not v.strip():
        raise Reject("missing_field", key)
    return v.strip()


def from_gsm8k(rec_id: str, rec: dict, source: str = "gsm8k") -> TextSample:
    question, solution = _text(rec, "question"), _text(rec, "answer")
    if "####" not in solution:
        raise Reject("no_final_answer", "GSM8K solution lacks '#### N'")
    body, final = solution.rsplit("####", 1)
    answer = parse_answer(final)
    steps = [s.strip() for s in body.splitlines() if s.strip()]
    if not steps:
        raise Reject("empty", "no solution steps")
    clean_body = re.sub(r"<<[^>]*>>", "", body)
    _require_derived(question, clean_body, answer)
    return TextSample(rec_id, source, "multi_step", question, _reasoning(steps, answer), _concise(steps, answer), answer)


_OPS = {ast.Add: ("+", "plus"), ast.Sub: ("-", "minus"), ast.Mult: ("*", "times"), ast.Div: ("/", "divided by")}


def _steps_of(expr: str) -> tuple[float, list[tuple[str, str, str, str]]]:
    """Evaluate an arithmetic expression innermost first: (value, [(a, op, b, result), ...])."""
    steps: list[tuple[str, str, str, str]] = []

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Div) and b == 0:
                raise Reject("bad_equation", "division by zero")
            v = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b, ast.Div: a / b if b else 0.0}[type(node.op)]
            steps.append((fmt(a), _OPS[type(node.op)][0], fmt(b), fmt(v)))
            return v
        raise Reject("bad_equation", f"unsupported {type(node).__name__}")

    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise Reject("bad_equation", expr[:40]) from e
    return ev(tree.body), steps


def from_svamp(rec_id: str, rec: dict, source: str = "svamp") -> TextSample:
    body, q = _text(rec, "Body"), _text(rec, "Question")
    if body[-1] in ".!?":
        question = f"{body} {q}"
    else:
        question = f"{body}, {q[0].lower()}{q[1:]}"
    answer = parse_answer(rec.get("Answer"))
    value, steps = _steps_of(_text(rec, "Equation"))
    if not steps:
        raise Reject("bad_equation", "no operation")
    if abs(value - float(answer)) > 1e-4 * max(1.0, abs(float(answer))):
        raise Reject("wrong_answer", f"equation gives {fmt(value)}, dataset says {answer}")
    reasoning = " ".join(f"{a} {op} {b} = {v}." for a, op, b, v in steps) + f" Answer: {answer}."
    spoken = [f"{a} {_WORD_OP[op]} {b} is {v}" for a, op, b, v in steps]
    if len(spoken) == 1:
        text = f"{spoken[0][0].upper()}{spoken[0][1:]}."
    else:
        text = "First, " + spoken[0] + ". " + " ".join(f"Then {s}." for s in spoken[1:])
    kind = "single_step" if len(steps) == 1 else "multi_step"
    return TextSample(rec_id, source, kind, question, reasoning, f"{text} The answer is {answer}.", answer)


_WORD_OP = {sym: word for sym, word in _OPS.values()}


def _after_marker(text: str, markers: tuple[str, ...]) -> tuple[str, str] | None:
    for m in markers:
        i = text.rfind(m)
        if i >= 0:
            return text[:i], text[i + len(m):]
    return None


def from_metamathqa(rec_id: str, rec: dict, source: str = "metamathqa") -> TextSample:
    question, solution = _text(rec, "query"), _text(rec, "response")
    cut = _after_marker(solution, ("The answer is:", "The answer is", "####"))
    if cut is None:
        raise Reject("no_final_answer", "MetaMathQA response lacks 'The answer is:'")
    body, final = cut
    answer = parse_answer(final.strip().split("\n")[0])
    steps = _sentences(body)
    if not steps:
        raise Reject("empty", "no solution steps")
    _require_derived(question, body, answer)
    return TextSample(rec_id, source, "multi_step", question, _reasoning(steps, answer), _concise(steps, answer), answer)


def from_orca_math(rec_id: str, rec: dict, source: str = "orca_math") -> TextSample:
    question, solution = _text(rec, "question"), _text(rec, "answer")
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", solution)
    if boxed:
        answer = parse_answer(boxed[-1])
    else:
        # No answer field: the last number of the solution is the answer (Orca-Math's own convention).
        found = numbers(solution.replace("$", " "))
        if not found:
            raise Reject("no_final_answer", "Orca-Math solution states no number")
        answer = found[-1][0]
    steps = _sentences(solution)
    if not steps:
        raise Reject("empty", "no solution steps")
    _require_derived(question, solution, answer)
    return TextSample(rec_id, source, "multi_step", question, _reasoning(steps, answer), _concise(steps, answer), answer)


def from_builtin(rec_id: str, rec: dict, source: str = "builtin") -> TextSample:
    for k in ("question", "reasoning", "response", "answer", "kind"):
        _text(rec, k)
    return TextSample(rec_id, source, rec["kind"], rec["question"], rec["reasoning"],
                      clean_response(rec["response"]), parse_answer(rec["answer"]))


DECOMPOSE = {
    "builtin": from_builtin,
    "gsm8k": from_gsm8k,
    "svamp": from_svamp,
    "metamathqa": from_metamathqa,
    "orca_math": from_orca_math,
}


def decompose(source_kind: str, rec_id: str, rec: dict) -> TextSample:
    try:
        fn = DECOMPOSE[source_kind]
    except KeyError:
        raise Reject("unknown_source", source_kind) from None
    if not isinstance(rec, dict):
        raise Reject("malformed_record", type(rec).__name__)
    return fn(rec_id, rec)

"""Source records -> (question, reasoning trace, concise spoken response, answer).

One function per source format. The reasoning keeps the source's steps (symbols allowed; GSM8K's
``<<a=b>>`` calculator marks and markdown markers removed; GSM8K "socratic" sub-questions kept as
the step's own question) and ends with ``Answer: N.``; the response restates the last step(s) in
words, with numbers as digits, never a sub-question, and ends "The answer is N.". A record that
cannot be turned into a verified sample raises :class:`Reject` with a short reason that the stage
counts; a record with an answer but no worked solution raises :class:`NoSolution` (reason
``no_solution``) the same way through every loader, so a rewriter can supply one
(:func:`from_generated`).
"""

from __future__ import annotations

import ast
import math
import re

from models.drift import normalize_number, numbers
from tasks.synth.builtin import Problem
from tasks.synth.verbalize import NUM, clean_response, group_thousands, strip_markup, strip_special_tokens

RESPONSE_WORDS = 40  # budget for the restated steps; "The answer is N." comes on top


class Reject(Exception):
    """A record that does not become a sample; ``reason`` is the counted key, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class NoSolution(Reject):
    """An answer-only record (no worked steps): carries what a generated solution needs."""

    def __init__(self, source: str, question: str, answer: str, detail: str = "answer only, no worked solution"):
        super().__init__("no_solution", detail)
        self.source, self.question, self.answer = source, question, answer


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
        if step.rstrip().endswith("?"):
            continue  # a sub-question belongs to the reasoning, never to what is said
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
# "3(34)" is 3 times 34: a bracket right after an operand is an implied product.
_EXPR = _OPERAND + r"(?:(?:\s*[-+*/x×÷]\s*|(?<=\d)\s*(?=\())" + _OPERAND + r")*"
_EQUATION = re.compile(r"(" + _EXPR + r")(?:\s*=\s*(" + _EXPR + r"))+")


def collapse_equations(text: str) -> str:
    """Keep only the result of each worked equation: "She makes 9 * 2 = $18" -> "She makes $18"."""
    text = re.sub(r"<<[^>]*>>", "", text)

    def last_side(m: re.Match) -> str:
        return " " + m.group(0).rsplit("=", 1)[1].strip() + " "

    return _EQUATION.sub(last_side, text)


def _reasoning(steps: list[str], answer: str) -> str:
    # "$400 000" as one number: the drift rule reads digit runs, and the response says 400000.
    steps = [strip_special_tokens(s).strip() for s in steps]  # whatever wrote the steps (a dataset, an LLM)
    body = " ".join(_finish(group_thousands(re.sub(r"<<[^>]*>>", "", s), commas=False)) for s in steps if s)
    return f"{body} Answer: {answer}.".strip()


def _require_derived(question: str, reasoning_body: str, answer: str) -> None:
    """The answer must be a number the solution (or the question) states: else it was never derived."""
    have = {n for n, _, _ in numbers(reasoning_body)} | {n for n, _, _ in numbers(question)}
    if answer not in have:
        raise Reject("answer_not_derived", f"answer {answer} appears nowhere in the solution")


# "The answer is: 5", "Answer: 5", "#### 5", "\boxed{5}", "= 5": what an answer-only solution says.
_ANSWER_ONLY = re.compile(
    r"(?is)^[\s#*.:=$]*(?:(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=]?)?[\s#$]*(?:\\boxed)?[\s{$(]*"
    r"-?(?:" + NUM + r")\s*[%})$]*\s*[A-Za-z]{0,12}\s*[.!]?\s*$")


_ANSWER_WORDS = re.compile(r"(?i)\\boxed|####|\b(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\b|\b(?:in\s+)?total\b|\bso\b"
                           r"|\btherefore\b|\bthus\b|\bis\b")
ANSWER_ONLY_WORDS = 4  # besides answer phrases, a restated answer names at most a unit ("12 apples in total.")


def is_answer_only(solution: str) -> bool:
    """A solution text that states only its final number, however it says it: MAWPS-style or
    MetaMath "backward" files ("The answer is: 5"), Orca-Math's "12 in total.", or "#### 5" followed by
    "The answer is: 5". It has no operator and one value, in a few words."""
    t = strip_markup(re.sub(r"<<[^>]*>>", " ", solution)).strip()
    if not t or _ANSWER_ONLY.match(t):
        return True
    if re.search(r"[=+*/×÷^]|\d\s*-\s*\d|\b(?:plus|minus|times|divided|multiplied|subtract|add)", t, re.I):
        return False
    values = {normalize_number(n) for n, _, _ in numbers(t.replace("$", " "))}
    rest = _ANSWER_WORDS.sub(" ", re.sub(r"-?(?:" + NUM + r")", " ", t))
    return len(values) == 1 and len(re.findall(r"[A-Za-z]+", rest)) <= ANSWER_ONLY_WORDS


def gsm8k_steps(body: str) -> list[str]:
    """Solution lines as steps. A socratic line "header ** step" is split at its ``**``: a header that
    is a whole question ("How many eggs does she sell?") stays as the step's own question in the
    reasoning; any other header (a label such as "Define a variable" or "Simplify", or a question
    cut mid-sentence) is dropped, never glued to the step it introduces."""
    steps = []
    for line in re.sub(r"<<[^>]*>>", "", body).splitlines():
        line = line.strip()
        # The first "**" of the line, unless it opens markdown bold ("He has **5** apples").
        m = re.match(r"^([^*]*?[A-Za-z][^*]*?)\s*\*\*(?!\S[^*]*\*\*)\s*(.*)$", line)
        if m:
            header, step = strip_markup(m.group(1)).strip(), strip_markup(m.group(2)).strip()
            if _whole_question(header):
                steps.append(_finish(header))
            if step:
                steps.append(step)
        elif line:
            steps.append(strip_markup(line).strip())
    return [s for s in steps if s]


def _whole_question(header: str) -> bool:
    """A sub-question a reader can take as said: a capitalised sentence ending in '?' that does not
    stop on a word that needs one after it ("How much does the?")."""
    return (header.endswith("?") and header[:1].isupper()
            and not re.search(r"\b(?:the|a|an|of|to|and|or|than|with|by|his|her|their|its|per)\s*\?$", header, re.I))


def _text(rec: dict, key: str) -> str:
    """A record's text field, with tokenizer control text ("<|endoftext|>") a scrape left in it dropped."""
    v = rec.get(key)
    if not isinstance(v, str) or not v.strip():
        raise Reject("missing_field", key)
    v = strip_special_tokens(v).strip()
    if not v:
        raise Reject("missing_field", f"{key} (only special tokens)")
    return v


def from_gsm8k(rec_id: str, rec: dict, source: str = "gsm8k") -> TextSample:
    question, solution = _text(rec, "question"), _text(rec, "answer")
    if "####" not in solution:
        if is_answer_only(solution):
            raise NoSolution(source, question, parse_answer(_strip_answer_words(solution)))
        raise Reject("no_final_answer", "GSM8K solution lacks '#### N'")
    body, final = solution.rsplit("####", 1)
    answer = parse_answer(final)
    if is_answer_only(body):
        raise NoSolution(source, question, answer)
    steps = gsm8k_steps(body)
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
    equation = rec.get("Equation")
    if not isinstance(equation, str) or not equation.strip():
        raise NoSolution(source, question, answer, "no Equation")
    value, steps = _steps_of(equation)
    if not steps:
        raise NoSolution(source, question, answer, f"Equation {equation.strip()!r} has no operation")
    if abs(value - float(answer)) > 1e-4 * max(1.0, abs(float(answer))):
        raise Reject("equation_mismatch", f"equation gives {fmt(value)}, dataset says {answer}")
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


def _from_steps(rec_id: str, source: str, question: str, body: str, answer: str) -> TextSample:
    """A sample from free-text worked steps (Orca-Math, MetaMathQA, a generated solution)."""
    body = strip_markup(re.sub(r"<<[^>]*>>", " ", body))
    steps = _sentences(body)
    _require_derived(question, body, answer)
    return TextSample(rec_id, source, "multi_step", question, _reasoning(steps, answer), _concise(steps, answer), answer)


def from_metamathqa(rec_id: str, rec: dict, source: str = "metamathqa") -> TextSample:
    question, solution = _text(rec, "query"), _text(rec, "response")
    if is_answer_only(solution):
        raise NoSolution(source, question, parse_answer(_strip_answer_words(solution)))
    cut = _after_marker(solution, ("The answer is:", "The answer is", "####"))
    if cut is None:
        raise Reject("no_final_answer", "MetaMathQA response lacks 'The answer is:'")
    body, final = cut
    answer = parse_answer(final.strip().split("\n")[0])
    if is_answer_only(body):
        raise NoSolution(source, question, answer)
    return _from_steps(rec_id, source, question, body, answer)


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
    if is_answer_only(solution):
        raise NoSolution(source, question, answer)
    return _from_steps(rec_id, source, question, solution, answer)


_OPTION = re.compile(r"^\s*\(?([A-Ea-e])\s*[).:]\s*(.*)$", re.S)
# Units and currency an AQuA option may carry around its one number ("Rs. 3000", "12 km/hr", "20%").
_OPTION_UNITS = re.compile(r"(?i)^(?:rs\.?|inr|\$|₹|€|£)\s*|\s*(?:%|/-|(?:[a-z]+\.?(?:\s*/\s*[a-z]+\.?)?|sq\.?\s*[a-z]+)"
                           r"(?:\s+[a-z]+)?)$")


def option_answer(options: object, correct: object) -> str:
    """The number of the option ``correct`` names ("C" and ["A)12", "B)15", "C)Rs. 3,000"] -> "3000");
    Reject('non_numeric_answer') when that option is not one number (a formula, "None of these")."""
    if not isinstance(correct, str) or not re.fullmatch(r"\s*[A-Ea-e]\s*", correct):
        raise Reject("missing_field", f"correct option letter {correct!r}")
    if not isinstance(options, (list, tuple)) or not options:
        raise Reject("missing_field", "options")
    for opt in options:
        m = _OPTION.match(str(opt))
        if m and m.group(1).upper() == correct.strip().upper():
            text = _OPTION_UNITS.sub("", m.group(2).strip()).strip()
            return parse_answer(group_thousands(text))
    raise Reject("missing_field", f"no option {correct.strip()} among {len(options)} options")


def from_aqua(rec_id: str, rec: dict, source: str = "aqua") -> TextSample:
    """AQuA-RAT: a question, lettered options, the ``correct`` letter and a rationale that ends by
    naming the letter ("Answer: C"). The answer is the correct option's number; the rationale, without
    its closing letter, is the worked solution."""
    question = _text(rec, "question")
    answer = option_answer(rec.get("options"), rec.get("correct"))
    rationale = rec.get("rationale")
    if not isinstance(rationale, str) or not rationale.strip():
        raise NoSolution(source, question, answer, "no rationale")
    body = strip_special_tokens(rationale)
    # The closing "Answer: C", "ANSWER IS C", "Correct option: (C)" names a letter, not a value.
    body = re.sub(r"(?is)[\s.]*\b(?:the\s+)?(?:correct\s+)?(?:answer|option|choice|ans)\b\s*(?:is|will be|=|:)?\s*"
                  r"(?:option\s*)?\(?[A-E]\)?\s*[.!]?\s*$", "", body)
    body = re.sub(r"(?im)^\s*(?:explanation|solution|sol|ans)\s*[:.-]*\s*$", "", body).strip()
    if is_answer_only(body):
        raise NoSolution(source, question, answer)
    return _from_steps(rec_id, source, question, body, answer)


def _strip_answer_words(text: str) -> str:
    m = re.search(r"-?(?:" + NUM + r")", text.replace("$", ""))
    if not m:
        raise Reject("non_numeric_answer", text[:40])
    return m.group()


def from_generated(rec_id: str, source: str, question: str, solution: str, answer: str) -> TextSample:
    """A sample for an answer-only record from a generated worked solution that must reach ``answer``.

    The solution goes through the same decomposition (and then the same verification) as a dataset's
    own; one whose final number differs from the dataset's answer is rejected (``generated_wrong_answer``)."""
    solution = strip_special_tokens(solution)
    if is_answer_only(solution):
        raise NoSolution(source, question, answer, "the generated solution has no steps either")
    cut = _after_marker(solution, ("The answer is:", "The answer is", "####", "Answer:"))
    body = cut[0] if cut else solution
    stated = numbers(cut[1] if cut else solution.replace("$", " "))
    if not stated or normalize_number(stated[0 if cut else -1][0]) != answer:
        raise Reject("generated_wrong_answer", f"generated solution ends with {stated[-1][0] if stated else 'no number'}, "
                                               f"dataset says {answer}")
    if is_answer_only(body):
        raise NoSolution(source, question, answer, "the generated solution has no steps either")
    return _from_steps(rec_id, source, question, body, answer)


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
    "aqua": from_aqua,
}


def decompose(source_kind: str, rec_id: str, rec: dict) -> TextSample:
    try:
        fn = DECOMPOSE[source_kind]
    except KeyError:
        raise Reject("unknown_source", source_kind) from None
    if not isinstance(rec, dict):
        raise Reject("malformed_record", type(rec).__name__)
    return fn(rec_id, rec)

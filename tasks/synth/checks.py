"""Text rules a sample must pass before it is spoken, and the catalogue of rejection reasons.

``response_problem(response, spoken)``: the concise response (digits kept) and its spoken form must
hold no sub-question, no markup (``**``, ``#``, brackets, backslashes...) and no markup read aloud
("times times", "number number"), and no word repeated back to back. ``REASONS`` names every reason
the stage counts (``stats.json["rejected"]``) with what to do about it.

    python -m tasks.synth.checks "How many? ** He has 5. The answer is 5."
"""

from __future__ import annotations

import re
import sys

# Every rejection reason the synthesize stage can count, and what it tells a person to do.
REASONS: dict[str, str] = {
    # the record itself (tasks.synth.solutions / sources)
    "missing_field": "a field the source needs is absent or empty; fix the file or the source kind",
    "malformed_record": "the record is not an object",
    "unknown_source": "synthesize.sources[].kind is not a known loader",
    "no_final_answer": "the solution states no final answer ('#### N', 'The answer is: N')",
    "non_numeric_answer": "the final answer is not a number (Spoken-MQA scores numbers only)",
    "no_solution": "answer-only record: no worked steps (turn on synthesize.llm.rewrite to generate them)",
    "generated_wrong_answer": "the LLM's generated solution does not reach the dataset's answer",
    "bad_equation": "an SVAMP Equation that does not parse as arithmetic",
    "equation_mismatch": "an SVAMP Equation whose value differs from its Answer",
    "answer_not_derived": "the answer appears nowhere in the solution steps",
    # speaking the question
    "empty_question": "nothing left to say after rewriting the question",
    "unreadable_math": "math the rewriter cannot say faithfully (unbalanced brackets, unsupported LaTeX)",
    "unspeakable_question": "the spoken question still holds digits or math symbols",
    "markup_in_question": "the spoken question reads markup aloud",
    "number_mismatch_question": "the spoken question does not read back to the question's numbers",
    # the response
    "empty_response": "no response text",
    "question_in_response": "the response holds a (sub-)question",
    "markup_in_response": "the response holds markup or reads it aloud",
    "repeated_words": "the spoken response repeats a word back to back",
    "number_mismatch_response": "the spoken response does not read back to the response's numbers",
    "wrong_answer": "the response does not end 'The answer is N.' with the dataset's answer",
    # layout and length
    "question_too_long": "more words than synthesize.max_question_words",
    "response_too_long": "more words than synthesize.max_response_words",
    "sequence_too_long": "interleaved sequence longer than synthesize.max_len tokens",
    "drift": "the response says a number before the reasoning derives it",
    "format": "the TiS layout cannot be built (response ends before the reasoning)",
    # optional LLM judge, audio
    "judge_rejected": "the LLM judge says the spoken question changed meaning",
    "tts_failed": "the TTS backend raised",
    "silent_question_audio": "question audio is silent",
    "silent_response_audio": "response audio is silent",
    "bad_question_duration": "question audio too short or long for its words",
    "bad_response_duration": "response audio too short or long for its words",
    "asr_mismatch": "offline ASR heard too few of the question's words",
}  # plus error_<Exception>: an unexpected bug (the log has the record id)

# Characters no response may keep: markdown, LaTeX, brackets, formula signs (digits, . , : stay).
MARKUP_CHARS = re.compile(r"[*#_`|<>{}\[\]\\^=~$@]")
# Symbols read aloud: a doubled operator word is a markdown marker or a broken formula said as words.
MARKUP_READINGS = re.compile(
    r"\b(?:(times|number|plus|equals|over|minus|percent|dollars|cents)(?:\s*,?\s*\1\b)+"
    r"|asterisks?|underscores?|backslash(?:es)?|backticks?)\b", re.I)
# Words English repeats on purpose ("had had", "that that").
REPEAT_OK = frozenset({"had", "that", "very", "so", "no", "bye", "ha", "many", "far", "more"})


def markup_reading(spoken: str) -> str:
    m = MARKUP_READINGS.search(spoken)
    return m.group() if m else ""


_DIGIT = r"(?:zero|one|two|three|four|five|six|seven|eight|nine)"
_NUMBER_WORD = (r"(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|twenty|thirty|forty"
                r"|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|billion)")


def repeated_word(spoken: str) -> str:
    """A word said twice in a row ("of of", "is is"). A number said again as the start of a bigger
    one ("four, four thousand four hundred", "twenty, twenty-four") is a formula that lost its
    operator; "two, two hour appointments" is fine. Decimal digits ("point six six six") are fine."""
    t = re.sub(r"\bpoint(?: " + _DIGIT + r")+", " point . ", spoken, flags=re.I)
    for m in re.finditer(r"\b([A-Za-z']+)(?:\s+\1\b)+", t, re.I):
        if m.group(1).lower() not in REPEAT_OK:
            return m.group()
    m = re.search(r"\b(" + _NUMBER_WORD + r"),?\s+\1(?:\s+(?:hundred|thousand|million|billion)\b|-" + _DIGIT + r"\b)",
                  t, re.I)
    return m.group() if m else ""


def response_problem(response: str, spoken: str) -> tuple[str, str] | None:
    """(reason, detail) for a response a listener would reject, else None."""
    if "?" in response:
        q = re.search(r"[^.!?]*\?", response)
        return "question_in_response", (q.group() if q else response).strip()[:80]
    m = MARKUP_CHARS.search(response)
    if m:
        return "markup_in_response", f"{m.group()!r} in {response[max(0, m.start() - 30):m.end() + 30]!r}"
    said = markup_reading(spoken)
    if said:
        return "markup_in_response", f"reads {said!r}"
    rep = repeated_word(spoken)
    if rep:
        return "repeated_words", repr(rep)
    return None


if __name__ == "__main__":
    from tasks.synth.verbalize import speakable

    for arg in sys.argv[1:]:
        print(response_problem(arg, speakable(arg)) or "ok")

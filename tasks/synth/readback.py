"""Read numbers back: the values a text states, whether written with digits or spoken in words.

The synthesis stage rewrites a question into words for a TTS (``tasks.synth.verbalize``). This
module checks that rewrite independently: ``values(text)`` turns number words into digits with
text2num's ``alpha2digit`` (a maintained words-to-number reader) and then reads the digit forms
into exact values, so the original question and its spoken form can be compared value by value
(``mismatch``). It deliberately shares no code with the verbalizer: a speaking bug cannot hide
behind the same bug in the check.

Values are ``(kind, Fraction)`` pairs: kind ``n`` for a quantity (money in its main unit, so
"$0.50", "50¢" and "fifty cents" are all 1/2), kind ``t`` for a clock time in minutes after
midnight ("16:00", "4 pm" and "four p m" are all 960). What the reader understands, on both sides:

- integers with comma or space thousands (``1,200``, ``$400 000``), decimals (``2.05``, "two point
  zero five"), scale words (``1.5 million``), negatives (``-5``, "negative five"; "minus" between
  operands is subtraction and reads as the operand);
- money (``$12.50``, "twelve dollars and fifty cents", ``Rs.360``, ``$8 dollars``, ``$0.50 cents``);
- fractions and mixed numbers (``3/4``, "three quarters", ``1/3rd``, ``12 1/2``, "twelve and one half",
  "one over three hundred"), ordinals (``22nd``, "twenty-second");
- clock times (``7:05``, "seven oh five", ``1:00 PM``, "one p m", "four o'clock");
- an abbreviation with a dot before digits (``No.5``, ``Rs.360``) is not a decimal point.

    python -m tasks.synth.readback "It costs Rs.360 at 4 pm" "It costs three hundred and sixty rupees at four p m"
"""

from __future__ import annotations

import collections
import re
import sys
import unicodedata
from fractions import Fraction

from text_to_num import alpha2digit

Value = tuple[str, Fraction]

_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12,
           "lakh": 10**5, "lakhs": 10**5, "crore": 10**7, "crores": 10**7, "1000": 10**3, "1000000": 10**6, "1000000000": 10**9, "1000000000000": 10**12}
_SUBUNITS = r"cents?|pence|penny|paise"
_MAIN_UNITS = r"dollars?|euros?|pounds?|rupees?|bucks?"
_DEN_WORDS = {"half": 2, "halves": 2, "quarter": 4, "quarters": 4}
_CARDINAL = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|twenty|thirty|forty|fifty"
             r"|sixty|seventy|eighty|ninety|hundred|thousand|million|billion)")
_AMPM = r"(?P<ap>[ap])\.?\s?m\b\.?"


def _normalize(text: str, spoken: bool) -> str:
    t = "".join(f" {c}" if unicodedata.decomposition(c).startswith("<fraction>") else c for c in text)  # "2½"
    t = unicodedata.normalize("NFKC", t)  # "½" -> "1⁄2", NBSP/thin spaces -> " ", "²" -> "2"
    t = t.replace("\u2044", "/").replace("\u2212", "-").replace("\u2013", "-").replace("\u00a2", " cents")
    t = re.sub(r"<<[^>]*>>", " ", t)  # GSM8K calculator marks
    t = t.replace("\\$", "$").replace("\\%", "%")
    t = re.sub(r"\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}", r" \1/\2 ", t)
    t = re.sub(r"\^\s*\{?\s*(\d+)\s*\}?", r" \1 ", t)  # powers are numbers too ("squared" below)
    t = re.sub(r"\bsquared\b", " 2 ", t)
    t = re.sub(r"\bcubed\b", " 3 ", t)
    # An abbreviation before digits ("No.5", "Rs.360") ends with its dot; the digits are not a decimal.
    t = re.sub(r"\b(No|Nos|Rs|Re|INR)\.\s?(?=\d)|(?<![\w.])([A-Za-z]{1,4})\.(?=\d)", r" \1\2 ", t, flags=re.I)
    # "30-second ad" (spoken "thirty second ad"): a unit, not the ordinal the word reader would make
    # of it ("32nd"); "20 second graders" (spoken "twenty, second graders") and "twenty-second" stay ordinals.
    if spoken:
        t = re.sub(r"(\b" + _CARDINAL + r" )second(s?)\b", r"\1sec\2", t, flags=re.I)
    else:
        t = re.sub(r"(\d(?:-|\s+(?=seconds)))second(s?)\b", r"\1 sec\2", t, flags=re.I)
    t = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", t)  # "one-third", "twenty-one" for the word reader
    return t


def _group_thousands(t: str) -> str:
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)
    # Space-grouped thousands: after a currency sign, or two or more groups ("1 000 000").
    t = re.sub(r"(?<=[$€£₹])\s*\d{1,3}(?: \d{3})+(?![\d/-]|[.,]\d)", lambda m: m.group().replace(" ", ""), t)
    t = re.sub(r"(?<![\d.,])\d{1,3}(?: \d{3}){2,}(?![\d/-]|[.,]\d)", lambda m: m.group().replace(" ", ""), t)
    return t


NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"


def values(text: str, spoken: bool | None = None) -> collections.Counter[Value]:
    """The multiset of values ``text`` states. ``spoken``: read word-only forms (``7 45`` from "seven
    forty-five", "seven oh five") as clock times; default: when ``text`` holds no digit.

    "H:MM" is a clock time, except in a sentence about a ratio or proportion ("in the ratio of 7:11")."""
    if spoken is None:
        spoken = not any(c.isdigit() for c in text)
    t = _group_thousands(_normalize(text, spoken))
    # Digits with a scale word are one number ("5 hundred", "1.5 million"); the word reader would
    # leave "5 100".
    scaled = r"(?<![\d.])(" + NUM + r")\s+(hundred|thousand|million|billion|trillion|lakhs?|crores?)\b"
    t = re.sub(scaled, lambda m: f"{Fraction(m.group(1)) * _SCALES[m.group(2).lower()]}", t, flags=re.I)
    t = alpha2digit(t, "en", threshold=0)
    # The Indian scales ("six lakh", "2.5 crore") after the word reader, which does not know them.
    t = re.sub(scaled, lambda m: f"{Fraction(m.group(1)) * _SCALES[m.group(2).lower()]}", t, flags=re.I)
    # A ratio of three or more terms ("2:3:5") is numbers, never a clock time.
    t = re.sub(r"(?<![\d.:])\d+(?:\s*:\s*\d+){2,}(?![\d:]|\.\d)",
               lambda m: " ".join(re.findall(r"\d+", m.group())), t)
    out: collections.Counter[Value] = collections.Counter()
    t = _times(t, spoken, out)
    t = _money(t, out)
    t = _fractions(t, out)
    t = re.sub(r"(?<![\d.])(\d+\.\d+)\s+(?P<s>1000+)\b(?![.\d])",  # "one point five million" -> "1.5 1000000"
               lambda m: _emit(out, "n", Fraction(m.group(1)) * _SCALES[m.group("s")]), t)
    t = re.sub(r"(?<![\d.])(\d+)(?:st|nd|rd|th)\b", lambda m: _emit(out, "n", Fraction(m.group(1))), t)
    for m in re.finditer(r"(?<![\d.])(?P<neg>\bnegative\s+|(?<![\w.-])-)?(" + NUM + r")", t):  # "--38" is a dash
        negative = m.group("neg") is not None and not (m.group("neg") == "-" and _binary_minus(t, m.start()))
        out[("n", -Fraction(m.group(2)) if negative else Fraction(m.group(2)))] += 1
    return out


def _binary_minus(t: str, i: int) -> bool:
    """A '-' at ``t[i]`` after an operand (number, one-letter variable, bracket) is subtraction
    ("x - 5", "(a+b) -3"); after a word or at the start it is a sign ("was -5 degrees")."""
    before = t[:i].rstrip()
    return bool(re.search(r"(?:\d|(?<![A-Za-z])[A-Za-z]|[)\]|])$", before))


def _emit(out: collections.Counter, kind: str, v: Fraction) -> str:
    out[(kind, v)] += 1
    return " \x00 "  # a spent mention: no number left for the later passes


def _times(t: str, spoken: bool, out: collections.Counter) -> str:
    def clock(h: int, m: int, ap: str | None) -> str:
        if ap:
            h = h % 12 + (12 if ap.lower() == "p" else 0)
        return _emit(out, "t", Fraction(h * 60 + m))

    def colon(m: re.Match) -> str:
        sentence = m.string[max(m.string.rfind(".", 0, m.start()), m.string.rfind("?", 0, m.start()), 0):m.start()]
        if int(m.group(1)) > 23 or (not m.group("ap") and re.search(r"\b(?:ratios?|proportions?)\b", sentence, re.I)):
            return m.group()
        return clock(int(m.group(1)), int(m.group(2)), m.group("ap"))

    t = re.sub(r"(?<![\d.:])(\d{1,2}):([0-5]\d)(?!\d)(?:\s*" + _AMPM + ")?", colon, t, flags=re.I)
    # "5.02 A.M.": with am/pm after it, a dot between hours and minutes is a clock time.
    t = re.sub(r"(?<![\d.:])(\d{1,2})\.([0-5]\d)\s*" + _AMPM + r"(?![A-Za-z])",
               lambda m: clock(int(m.group(1)), int(m.group(2)), m.group("ap")), t, flags=re.I)
    t = re.sub(r"(?<![\d.])(\d{1,2})\s*o'clock\b", lambda m: clock(int(m.group(1)), 0, None), t, flags=re.I)
    if spoken:
        t = re.sub(r"(?<![\d.])(\d{1,2}) oh (\d)(?!\d|\.\d|st|nd|rd|th)(?:\s*" + _AMPM + ")?",
                   lambda m: clock(int(m.group(1)), int(m.group(2)), m.group("ap")), t, flags=re.I)
        t = re.sub(r"(?<![\d.,])(\d{1,2}) ([1-5]\d)(?!\d|\.\d|st|nd|rd|th)(?:\s*" + _AMPM + ")?",
                   lambda m: clock(int(m.group(1)), int(m.group(2)), m.group("ap")), t, flags=re.I)
    t = re.sub(r"(?<![\d.])(\d{1,2})\s*" + _AMPM + r"(?![A-Za-z])",
               lambda m: clock(int(m.group(1)), 0, m.group("ap")), t, flags=re.I)
    return t


def _money(t: str, out: collections.Counter) -> str:
    def amount(m: re.Match) -> str:
        v = Fraction(m.group("a"))
        if m.group("s"):
            v *= _SCALES[m.group("s").strip()]
        if m.group("u") and re.fullmatch(_SUBUNITS, m.group("u"), re.I) and v >= 1:
            v /= 100  # "$50 cents" is fifty cents; "$0.50 cents" already says it in dollars
        return _emit(out, "n", v)

    prefix = r"(?:[$€£₹]|\bRs\b|\bRe\b|\bINR\b)\s*"
    scale = r"(?P<s>\s+(?:thousand|million|billion|trillion|1000+)\b)?"
    t = re.sub(prefix + r"(?P<a>" + NUM + ")" + scale + r"(?:\s*(?P<u>" + _MAIN_UNITS + "|" + _SUBUNITS + r")\b)?",
               amount, t, flags=re.I)
    t = re.sub(r"(?<![\d.])(" + NUM + r")\s*(?:" + _MAIN_UNITS + r")\s+and\s+(\d+)\s*(?:" + _SUBUNITS + r")\b",
               lambda m: _emit(out, "n", Fraction(m.group(1)) + Fraction(m.group(2)) / 100), t, flags=re.I)
    t = re.sub(r"(?<![\d.])(" + NUM + r")[\s-]*(?:" + _SUBUNITS + r")\b",
               lambda m: _emit(out, "n", Fraction(m.group(1)) / 100), t, flags=re.I)
    return t


def _fractions(t: str, out: collections.Counter) -> str:
    def frac(a: str, b: str) -> Fraction | None:
        return Fraction(int(a), int(b)) if int(b) else None

    def den_of(word: str) -> int | None:
        if word.lower() in _DEN_WORDS:
            return _DEN_WORDS[word.lower()]
        m = re.fullmatch(r"(\d+)(?:st|nd|rd|th)s?", word)
        return int(m.group(1)) if m and int(m.group(1)) > 2 else None

    def mixed(m: re.Match) -> str:
        f = frac(m.group("a"), m.group("b"))
        return m.group() if f is None else _emit(out, "n", int(m.group("w") or 0) + f)

    def spoken_frac(m: re.Match) -> str:
        d = den_of(m.group("d"))
        # English says "one third", "two thirds": "20 fourth graders" is two numbers, not 20/4.
        plural = m.group("d").lower().endswith("s")
        if d is None or plural != (int(m.group("a")) != 1):
            return m.group()
        whole = int(m.group("w")) if m.group("w") else 0
        return _emit(out, "n", whole + Fraction(int(m.group("a")), d))

    ordsuf = r"(?:st|nd|rd|th)?s?\b"
    t = re.sub(r"(?<![\d./])(?P<w>\d+)\s+(?:and\s+)?(?P<a>\d+)/(?P<b>\d+)" + ordsuf, mixed, t)
    t = re.sub(r"(?<![\d.])(?P<w>)(?P<a>\d+)/(?P<b>\d+)" + ordsuf, mixed, t)
    t = re.sub(r"(?<![\d.])(?P<w>)(?P<a>\d+) over (?P<b>\d+)(?!\d|\.\d)", mixed, t)
    word = r"(?P<d>half|halves|quarters?|\d+(?:st|nd|rd|th)s?)\b"
    t = re.sub(r"(?<![\d.])(?P<w>\d+) and (?P<a>\d+) " + word, spoken_frac, t, flags=re.I)
    t = re.sub(r"(?<![\d.])(?P<w>\d+) and a (?P<d>half|quarter)\b",
               lambda m: _emit(out, "n", int(m.group("w")) + Fraction(1, _DEN_WORDS[m.group("d").lower()])), t, flags=re.I)
    t = re.sub(r"(?<![\d.])(?P<w>)(?P<a>\d+) " + word, spoken_frac, t, flags=re.I)
    return t


def describe(c: collections.Counter[Value]) -> str:
    parts = []
    for (kind, v), n in sorted(c.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        s = str(v) if v.denominator == 1 else (f"{float(v):g}" if (v.denominator & (v.denominator - 1)) == 0
                                               or v.denominator % 5 == 0 else str(v))
        if kind == "t":
            s = f"{int(v) // 60}:{int(v) % 60:02d}"
        parts += [s] * n
    return ", ".join(parts) or "none"


def mismatch(source: str, spoken: str) -> str:
    """'' when ``spoken`` states exactly the values of ``source``; else what differs, for a person.

    Two numbers said in a row ("each one ten feet", "seven forty-five") may be a clock time or not:
    the words match when either reading gives the source's values."""
    want, got = values(source, spoken=False), values(spoken, spoken=True)
    if want == got or want == values(spoken, spoken=False):
        return ""
    missing, extra = want - got, got - want
    return f"lost [{describe(missing)}], read back instead [{describe(extra)}]"


if __name__ == "__main__":
    src, said = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
    print("source:", describe(values(src, spoken=False)))
    if said:
        print("spoken:", describe(values(said, spoken=True)))
        print(mismatch(src, said) or "same values")

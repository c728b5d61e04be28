"""Desymbolize math text into speakable English (numbers read by num2words).

``speakable(text)``: everything a TTS reads badly becomes words: money (``$12.50`` -> "twelve dollars
and fifty cents"), fractions (``3/4`` -> "three quarters", ``2 1/2`` -> "two and one half"),
decimals, percentages, ordinals, times, ratios, thousands separators, operators and LaTeX
(``\\frac``, ``\\sqrt``, powers, ``\\times``...). The result holds no digits and no math symbols.

``clean_response(text)``: the same for a spoken response that keeps its numbers as digits (drift
checking and scoring read digits): ``$18`` -> "18 dollars", ``50%`` -> "50 percent", fractions
into words, operators into words, other symbols dropped.

    python -m tasks.synth.verbalize "She pays $12.50 for 3/4 of a 1,200 g cake (15% off)."
"""

from __future__ import annotations

import re
import sys
import unicodedata

from num2words import num2words

NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
SCALE = r"(?:\s+(?:thousand|million|billion|trillion))?"
_MAX_DIGITS = 15  # longer digit strings (ids, phone numbers) are read digit by digit

_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
             "£": ("pound", "pounds", "penny", "pence")}
_UNICODE = {
    "\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": ", ", "\u2212": "-",
    "\u00d7": "*", "\u00f7": "/", "\u22c5": "*", "\u2264": "<=", "\u2265": ">=", "\u2260": "!=",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u00bd": " 1/2", "\u00bc": " 1/4", "\u00be": " 3/4",
    "\u2153": " 1/3", "\u2154": " 2/3", "\u00b2": "^2", "\u00b3": "^3", "\u03c0": " pi ", "\u221a": " sqrt ",
    "\u00b0": " degrees ", "\u00a2": " cents", "\u2026": "...",
}
_LATEX_WORDS = {
    "times": " times ", "cdot": " times ", "div": " divided by ", "pm": " plus or minus ",
    "le": " is less than or equal to ", "leq": " is less than or equal to ",
    "ge": " is greater than or equal to ", "geq": " is greater than or equal to ",
    "ne": " is not equal to ", "neq": " is not equal to ", "lt": " is less than ", "gt": " is greater than ",
    "approx": " is about ", "pi": " pi ", "infty": " infinity ", "circ": " degrees ", "degree": " degrees ",
    "%": " percent", "$": "$", "cdots": " and so on ", "ldots": " and so on ", "dots": " and so on ",
    "left": " ", "right": " ", "quad": " ", "qquad": " ", ",": " ", ";": " ", "!": "", ":": " ",
    "displaystyle": " ", "textstyle": " ", "cup": " union ", "cap": " intersect ", "in": " in ",
    "angle": " angle ", "triangle": " triangle ", "sin": " sine ", "cos": " cosine ", "tan": " tangent ",
    "log": " log ", "ln": " natural log ", "sqrt": " square root of ", "%%": " percent",
}


# --- numbers -----------------------------------------------------------------------------------
def _words(s: str) -> str:
    """num2words output without commas ("one thousand two hundred")."""
    return s.replace(",", "")


def integer_words(digits: str) -> str:
    digits = digits.replace(",", "")
    if len(digits) > _MAX_DIGITS:
        return " ".join(_DIGIT_WORDS[int(c)] for c in digits)
    return _words(num2words(int(digits)))


def number_words(s: str) -> str:
    """'1,200' -> 'one thousand two hundred', '12.05' -> 'twelve point zero five', '.5' -> 'zero point five'."""
    s = s.replace(",", "")
    neg = s.startswith("-")
    s = s.lstrip("-")
    whole, _, frac = s.partition(".")
    out = integer_words(whole or "0")
    if frac:
        out += " point " + " ".join(_DIGIT_WORDS[int(c)] for c in frac)
    return ("minus " if neg else "") + out


def ordinal_words(n: int) -> str:
    return _words(num2words(n, to="ordinal"))


def fraction_words(num: str, den: str) -> str:
    """'3','4' -> 'three quarters'; '1','2' -> 'one half'; '7','15' -> 'seven fifteenths'."""
    a, b = int(num), int(den)
    if b == 0 or b == 1 or b > 100 or a >= 1000:
        return f"{integer_words(num)} over {integer_words(den)}"
    if b == 2:
        name = "half" if a == 1 else "halves"
    elif b == 4:
        name = "quarter" if a == 1 else "quarters"
    else:
        name = ordinal_words(b) + ("" if a == 1 else "s")
    return f"{integer_words(num)} {name}"


def money_words(symbol: str, amount: str, scale: str = "") -> str:
    one, many, cent, cents = _CURRENCY[symbol]
    amount = amount.replace(",", "")
    scale = scale.strip()
    if scale:
        return f"{number_words(amount)} {scale} {many}"
    whole, _, frac = amount.partition(".")
    whole = whole or "0"
    if len(frac) > 2:
        return f"{number_words(amount)} {many}"
    c = int((frac + "00")[:2]) if frac else 0
    parts = []
    if int(whole) or not c:
        parts.append(f"{integer_words(whole)} {one if int(whole) == 1 else many}")
    if c:
        parts.append(f"{integer_words(str(c))} {cent if c == 1 else cents}")
    return " and ".join(parts)


# --- LaTeX ---------------------------------------------------------------------------------------
_BRACED = r"\{((?:[^{}]|\{[^{}]*\})*)\}"


def _latex(text: str) -> str:
    if "\\" not in text and "^" not in text and "_" not in text and "{" not in text:
        return text.replace("\\$", "$")
    # With LaTeX about, an unescaped $ delimits math and an escaped one is money.
    t = text.replace("\\$", "\x00").replace("$", " ").replace("\x00", "$")
    t = re.sub(r"\\(?:text|mathrm|textbf|mathbf|textit|operatorname|mbox)\s*" + _BRACED, r" \1 ", t)
    for _ in range(3):  # nested fractions / roots
        t = re.sub(r"\\[dt]?frac\s*" + _BRACED + r"\s*" + _BRACED, _frac_sub, t)
        t = re.sub(r"\\[dt]?frac\s*(\d)(\d)", r" \1/\2 ", t)
        t = re.sub(r"\\sqrt\s*\[3\]\s*" + _BRACED, r" the cube root of \1 ", t)
        t = re.sub(r"\\sqrt\s*" + _BRACED, r" the square root of \1 ", t)
    t = re.sub(r"\^\s*\{?\s*2\s*\}?(?![\d.])", " squared ", t)
    t = re.sub(r"\^\s*\{?\s*3\s*\}?(?![\d.])", " cubed ", t)
    t = re.sub(r"\^\s*" + _BRACED, r" to the power of \1 ", t)
    t = re.sub(r"\^\s*(-?\w+)", r" to the power of \1 ", t)
    t = re.sub(r"_\s*" + _BRACED, r" sub \1 ", t)
    t = re.sub(r"(?<=[A-Za-z])_\s*(\w+)", r" sub \1 ", t)
    t = re.sub(r"\\([A-Za-z]+|[%$,;:!])", lambda m: _LATEX_WORDS.get(m.group(1), f" {m.group(1)} "), t)
    t = t.replace("\\\\", " ").replace("\\", " ")
    return t.replace("{", " ").replace("}", " ")


def _frac_sub(m: re.Match) -> str:
    a, b = m.group(1).strip(), m.group(2).strip()
    if re.fullmatch(r"\d+", a) and re.fullmatch(r"\d+", b):
        return f" {a}/{b} "
    return f" {a} over {b} "


# --- speakable -----------------------------------------------------------------------------------
def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return "".join(_UNICODE.get(c, c) for c in text)


def _time_sub(m: re.Match) -> str:
    h, mnt, ampm = m.group(1), m.group(2), (m.group(3) or "")
    words = integer_words(h)
    if int(mnt) == 0:
        words += " o'clock" if not ampm else ""
    elif int(mnt) < 10:
        words += " oh " + integer_words(mnt)
    else:
        words += " " + integer_words(mnt)
    if ampm:
        words += " " + " ".join(ampm.lower().replace(".", ""))
    return f" {words} "


def speakable(text: str) -> str:
    """Speakable English for a TTS: no digits, LaTeX or math symbols remain."""
    t = _normalize(text)
    t = re.sub(r"<<[^>]*>>", " ", t)  # GSM8K calculator marks
    math_ctx = bool(re.search(r"[=+*^\\]", t))  # a spaced hyphen is "minus" in math, a pause in prose
    t = t.replace("\\%", "%")
    t = _latex(t)
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # thousands separators (also "1,234,567")
    # Money before anything else reads its decimals.
    t = re.sub(r"([$€£])\s*(" + NUM + r")(" + SCALE + r")",
               lambda m: f" {money_words(m.group(1), m.group(2), m.group(3))} ", t)
    t = re.sub(r"(" + NUM + r")\s*([$€£])", lambda m: f" {money_words(m.group(2), m.group(1))} ", t)
    t = re.sub(r"(\d+)\s*(?:¢|cents?\b)", lambda m: f" {integer_words(m.group(1))} cents ", t)
    t = t.replace("$", " ")  # any other $ is a LaTeX math delimiter
    t = re.sub(r"(" + NUM + r")\s*%", lambda m: f" {number_words(m.group(1))} percent ", t)
    t = re.sub(r"\b(\d{1,2}):(\d{2})\s*([ap]\.?m\.?)?(?=\W|$)", _time_sub, t, flags=re.I)
    t = re.sub(r"\b(\d+)\s*:\s*(\d+)\b", lambda m: f" {integer_words(m.group(1))} to {integer_words(m.group(2))} ", t)
    t = re.sub(r"\b(\d+)\s+(\d+)\s*/\s*(\d+)\b",
               lambda m: f" {integer_words(m.group(1))} and {fraction_words(m.group(2), m.group(3))} ", t)
    t = re.sub(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])", lambda m: f" {fraction_words(m.group(1), m.group(2))} ", t)
    t = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: f" {ordinal_words(int(m.group(1)))} ", t, flags=re.I)
    # Operators between numbers.
    t = re.sub(r"(?<=\d)\s*[x*]\s*(?=[\d(.])", " times ", t)
    t = re.sub(r"(?<=\d)\s+-\s+(?=\d)", " minus ", t)
    t = re.sub(r"(?<=[\w)])\s+-\s+(?=[\w(])", " minus " if math_ctx else ", ", t)
    t = re.sub(r"(?<=\d)-(?=\d)", " minus " if math_ctx else " to ", t)
    t = re.sub(r"(?:(?<=^)|(?<=[\s(=]))-(?=\.?\d)", " minus ", t)
    t = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", t)  # "5km" -> "5 km", "x2" -> "x 2"
    t = re.sub(NUM, lambda m: f" {number_words(m.group())} ", t)
    t = re.sub(r"\band/or\b", "and or", t)
    for sym, word in (("<=", " is at most "), (">=", " is at least "), ("!=", " is not equal to "),
                      ("=", " equals "), ("<", " is less than "), (">", " is greater than "), ("+", " plus "),
                      ("*", " times "), ("^", " to the power of "), ("%", " percent "), ("#", " number "),
                      ("&", " and "), ("@", " at ")):
        t = t.replace(sym, word)
    t = re.sub(r"(?<=[A-Za-z])\s*/\s*(?=[A-Za-z])", " per ", t)
    t = t.replace("/", " over ")
    t = re.sub(r"[^A-Za-z0-9' .,?!;:\-]", " ", t)  # brackets, quotes, stray symbols
    t = re.sub(r"(?<!\w)-+|-+(?!\w)", " ", t)  # dashes that are not inside a word
    return _tidy(t)


def _tidy(t: str) -> str:
    t = re.sub(r"\s+", " ", t)
    t = re.sub(r"\s+([.,?!;:])(?!\d)", r"\1", t)
    t = re.sub(r"([.,?!;:])(?=[A-Za-z])", r"\1 ", t)
    t = re.sub(r"([,;:])[,;:.]+", r"\1", t)
    t = re.sub(r"\.{2,}", ".", t)
    return t.strip(" ,;:")


# --- response: numbers stay as digits ------------------------------------------------------------
def clean_response(text: str) -> str:
    """Spoken-response text: numbers stay digits, every other symbol becomes words or goes."""
    t = _normalize(text)
    t = re.sub(r"<<[^>]*>>", " ", t)
    t = t.replace("\\%", "%")
    t = _latex(t)
    t = re.sub(r"([$€£])\s*(" + NUM + r")(" + SCALE + r")",
               lambda m: f" {m.group(2)}{m.group(3)} {_CURRENCY[m.group(1)][0 if m.group(2) == '1' else 1]} ", t)
    t = t.replace("$", " ")
    t = re.sub(r"(" + NUM + r")\s*%", r" \1 percent ", t)
    t = re.sub(r"\b(\d+)\s+(\d+)\s*/\s*(\d+)\b", lambda m: f" {m.group(1)} and {fraction_words(m.group(2), m.group(3))} ", t)
    t = re.sub(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])", lambda m: f" {fraction_words(m.group(1), m.group(2))} ", t)
    t = re.sub(r"(?<=\d)\s*[x*]\s*(?=[\d(])", " times ", t)
    t = re.sub(r"(?<=[\d)])\s*-\s*(?=[\d(])", " minus ", t)
    t = re.sub(r"(?<=[\w)])\s+-\s+(?=[\w(])", ", ", t)
    t = re.sub(r"(?<=\d):(?=\d)", " ", t)
    for sym, word in (("<=", " is at most "), (">=", " is at least "), ("=", " is "), ("<", " is less than "),
                      (">", " is greater than "), ("+", " plus "), ("*", " times "), ("^", " to the power of "),
                      ("%", " percent "), ("&", " and "), ("#", " number ")):
        t = t.replace(sym, word)
    t = re.sub(r"(?<=[A-Za-z])\s*/\s*(?=[A-Za-z])", " per ", t)
    t = t.replace("/", " over ")
    t = re.sub(r"[^A-Za-z0-9' .,?!;\-]", " ", t)
    t = re.sub(r"(?<![\w])-(?!\d)|(?<=\w)-(?!\w)", " ", t)
    return _tidy(t)


FORBIDDEN = set("<>$%/=*\\{}^_#&@+") | set("0123456789")


def unspeakable_chars(spoken: str) -> set[str]:
    """Characters a spoken question must not hold (digits and math symbols); empty when clean."""
    return {c for c in spoken if c in FORBIDDEN}


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["She pays $12.50 for 3/4 of a 1,200 g cake (15% off) at 3:30 pm on the 2nd day."]:
        print(speakable(arg))
        print(clean_response(arg))

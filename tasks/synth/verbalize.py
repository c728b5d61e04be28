"""Desymbolize math text into speakable English (numbers read by num2words).

``speakable(text)``: everything a TTS reads badly becomes words, and every number keeps its value
when the words are read back (``tasks.synth.readback`` checks that independently):

- money: ``$12.50`` -> "twelve dollars and fifty cents", ``$8 dollars`` -> "eight dollars",
  ``$0.50 cents`` -> "fifty cents", ``Rs.360`` -> "three hundred and sixty rupees", ``$x`` -> "x dollars";
- numbers: ``1,200`` / ``$400 000`` (grouped thousands), ``2.05``, ``-5`` -> "negative five",
  ``No.5`` -> "number five" (an abbreviation's dot is not a decimal point);
- fractions: ``3/4`` -> "three quarters", ``12 1/2%`` -> "twelve and one half percent", ``1⁄2``, ``½``,
  ``1/3rd`` -> "one third"; percentages, ordinals, ratios;
- clock times: ``7:05`` -> "seven oh five", ``16:00`` -> "four p m", ``1:00 PM - 6:00 PM`` ->
  "one p m to six p m";
- math: ``x - y`` / ``M-3`` -> "minus", ``(3 + 4) * 5`` -> "the quantity three plus four, times five",
  ``2(x+1)`` -> "two times the quantity x plus one", ``√16`` -> "the square root of sixteen",
  ``|x|`` -> "the absolute value of x", powers, LaTeX (``\\frac``, ``\\sqrt``, ``\\times``...);
- markup (markdown emphasis, headings, list markers, GSM8K ``<<a=b>>`` marks) is dropped.

The result holds no digits and no math symbols. ``unreadable_math(text)`` names what cannot be
spoken faithfully (unbalanced brackets or bars, unsupported LaTeX) so the caller can reject it.

``clean_response(text)``: the same for a spoken response that keeps its numbers as digits (drift
checking and scoring read digits): ``$18`` -> "18 dollars", ``50%`` -> "50 percent", fractions
into words, operators into words, markup dropped.

    python -m tasks.synth.verbalize "She pays $12.50 for 3/4 of a 1,200 g cake (15% off)."
"""

from __future__ import annotations

import re
import sys
import unicodedata

from num2words import num2words

NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
SCALE = r"(?:\s+(?:thousand|million|billion|trillion|lakhs?|crores?))?"
_MAX_DIGITS = 15  # longer digit strings (ids, phone numbers) are read digit by digit

_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
             "£": ("pound", "pounds", "penny", "pence"), "₹": ("rupee", "rupees", "paisa", "paise")}
_UNIT_WORDS = r"dollars?|euros?|pounds?|rupees?|bucks?|cents?|pence|penny|paise"
_SUBUNIT_WORDS = r"cents?|pence|penny|paise"
_UNICODE = {
    "\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": ", ", "\u2212": "-",
    "\u00d7": "*", "\u00f7": " divided by ", "\u22c5": "*", "\u2264": "<=", "\u2265": ">=", "\u2260": "!=",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2044": "/", "\u00b2": "^2", "\u00b3": "^3", "\u03c0": " pi ",
    "\u00b0": " degrees ", "\u00a2": " cents", "\u2026": "...", "\u2116": "No.", "\u2223": "|",
    "\u2022": " ", "\u00b7": "*",
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
    "log": " log ", "ln": " natural log ", "sqrt": " square root of ", "%%": " percent", "mid": "|",
    "lvert": "|", "rvert": "|", "vert": "|", "lbrace": "(", "rbrace": ")", "lbrack": "(", "rbrack": ")",
    "boxed": " ", "theta": " theta ", "alpha": " alpha ", "beta": " beta ",
}
# Commands _latex rewrites itself (besides _LATEX_WORDS); any other command cannot be spoken faithfully.
_LATEX_HANDLED = {"frac", "dfrac", "tfrac", "sqrt", "text", "mathrm", "textbf", "mathbf", "textit", "operatorname",
                  "mbox", "(", ")", "[", "]", "{", "}", "\\", " "}


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
    frac = frac.rstrip("0")  # "12.50" -> "twelve point five": the same value, as people say it
    out = integer_words(whole or "0")
    if frac:
        out += " point " + " ".join(_DIGIT_WORDS[int(c)] for c in frac)
    return ("negative " if neg else "") + out


def ordinal_words(n: int) -> str:
    return _words(num2words(n, to="ordinal"))


def fraction_words(num: str, den: str) -> str:
    """'3','4' -> 'three quarters'; '1','2' -> 'one half'; '7','15' -> 'seven fifteenths'.

    Large parts are read "a over b": "two hundred thirds" or "one hundredth" would read back as
    203rd or 100th."""
    a, b = int(num), int(den)
    if b <= 1 or b >= 100 or a >= 100:
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


def time_words(h: int, m: int, ampm: str = "") -> str:
    """Clock time: (7, 5) -> 'seven oh five', (16, 0) -> 'four p m', (9, 30, 'am') -> 'nine thirty a m'."""
    ampm = ampm[:1].lower()
    if not ampm and (h == 0 or h >= 13):
        ampm = "p" if h >= 12 else "a"  # a 24-hour time is said on the 12-hour clock
    hour = h % 12 or 12 if ampm else h
    out = integer_words(str(hour))
    if m:
        out += (" oh " if m < 10 else " ") + integer_words(str(m))
    elif not ampm:
        out += " o'clock"
    return out + (f" {ampm} m" if ampm else "")


# --- markup and LaTeX ----------------------------------------------------------------------------
def strip_markup(text: str) -> str:
    """Drop markdown (emphasis, headings, list markers, rules, code ticks, 'Step 1:' labels)."""
    t = re.sub(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", r"\2", text)
    t = re.sub(r"(?<![\w*])\*([A-Za-z][A-Za-z ,'-]*[A-Za-z])\*(?![\w*])", r"\1", t)  # *italic* (never 2*3*4)
    t = re.sub(r"(?m)^[ \t]*(?:[-*_][ \t]*){3,}$", "", t)
    t = re.sub(r"(?m)^[ \t]{0,3}#{1,6}[ \t]+", "", t)
    t = re.sub(r"(?m)^[ \t]*>[ \t]?", "", t)
    # List markers; "36. 48. 84." (numbers in a row) is not a list.
    t = re.sub(r"(?m)^[ \t]*(?:[-*+•]|\d{1,2}[.)])[ \t]+(?=[^\d\s])", "", t)
    t = re.sub(r"(?im)^[ \t]*step[ \t]+\d+[ \t]*[:.)-][ \t]*", "", t)
    t = t.replace("`", "")
    return re.sub(r"\*\*+|__+", " ", t)


_BRACED = r"\{((?:[^{}]|\{[^{}]*\})*)\}"
# "$x$", "$2x+3$": a $ pair around math (no space inside either end) delimits LaTeX; "$5 and $6" is money.
_MATH_PAIR = re.compile(r"(?<![\\\w])\$(?=[^\s$])([^$\n]*?[\w)}\]|!'])\$(?![\d])")


def _latex(text: str) -> str:
    if re.search(r"\\[A-Za-z]", text):
        # With LaTeX commands about, an unescaped $ delimits math and an escaped one is money.
        t = text.replace("\\$", "\x00").replace("$", " ").replace("\x00", "$")
    else:
        t = _MATH_PAIR.sub(lambda m: f" {m.group(1)} " if re.search(r"[A-Za-z^=+*/]", m.group(1)) else m.group(), text)
        t = t.replace("\\$", "$")
    if not re.search(r"[\\^_{]", t):
        return t
    t = re.sub(r"\\(?:text|mathrm|textbf|mathbf|textit|operatorname|mbox)\s*" + _BRACED, r" \1 ", t)
    t = re.sub(r"\\[()\[\]]", " ", t)
    for _ in range(3):  # nested fractions / roots
        t = re.sub(r"\\[dt]?frac\s*" + _BRACED + r"\s*" + _BRACED, _frac_sub, t)
        t = re.sub(r"\\[dt]?frac\s*(\d)(\d)", r" \1/\2 ", t)
        t = re.sub(r"\\sqrt\s*\[3\]\s*" + _BRACED, r" the cube root of (\1) ", t)
        t = re.sub(r"\\sqrt\s*" + _BRACED, r" √(\1) ", t)
    t = re.sub(r"\^\s*\{?\s*2\s*\}?(?!\d|\.\d)", " squared ", t)
    t = re.sub(r"\^\s*\{?\s*3\s*\}?(?!\d|\.\d)", " cubed ", t)
    t = re.sub(r"\^\s*" + _BRACED, r" to the power of (\1) ", t)
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
    return f" ({a}) over ({b}) "


def unreadable_math(text: str) -> str:
    """Why ``text`` holds math that cannot be spoken faithfully ('' when it can)."""
    t = re.sub(r"<<[^>]*>>", " ", text)
    bad = sorted({c for c in re.findall(r"\\([A-Za-z]+)", t)
                  if c not in _LATEX_WORDS and c not in _LATEX_HANDLED and c not in ("left", "right")})
    if bad:
        return "unsupported LaTeX " + ", ".join("\\" + c for c in bad[:3])
    plain = re.sub(r"\\[{}()\[\]]|\\left.|\\right.", "", t)
    for o, c in ("()", "[]", "{}"):
        depth = 0
        for ch in plain:
            depth += (ch == o) - (ch == c)
            if depth < 0:
                break
        if depth:
            return f"unbalanced {o}{c}"
    if (plain.count("|") + plain.count("\u2223")) % 2:
        return "unbalanced |"
    if re.search(r"[+*/^=]\s*[+*/^=]", re.sub(r"\*\*|<=|>=|!=|==", "", plain)):
        return "two operators in a row"
    return ""


# --- speakable -----------------------------------------------------------------------------------
def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    out = []
    for i, c in enumerate(text):
        if unicodedata.decomposition(c).startswith("<fraction>"):  # "½" -> " 1/2", "2½" -> "2 1/2"
            out.append(" " + unicodedata.normalize("NFKC", c).replace("\u2044", "/"))
        else:
            out.append(_UNICODE.get(c, c))
    return "".join(out)


def _abbreviations(t: str) -> str:
    t = re.sub(r"\b(?:Rs|INR|Re)\.?\s?(?=\d)", "₹", t)
    t = re.sub(r"\b(No|Nos|no|nos)\.\s?(?=\d)", lambda m: "number " if m.group(1).lower() == "no" else "numbers ", t)
    return re.sub(r"(?<![\w.])([A-Za-z]{1,4})\.(?=\d)", r"\1 ", t)  # "Fig.3": a dot that is not a decimal point


def group_thousands(t: str, commas: bool = True) -> str:
    """Digits grouped with spaces ("$400 000", "1 000 000"), and with commas ("1,234,567") unless
    ``commas`` is False, as one digit run."""
    if commas:
        t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)
    # Thousands grouped with spaces: after a currency sign, or in two or more groups.
    t = re.sub(r"(?<=[$€£₹])\s*\d{1,3}(?: \d{3})+(?![\d/-]|[.,]\d)", lambda m: m.group().replace(" ", ""), t)
    return re.sub(r"(?<![\d.,])\d{1,3}(?: \d{3}){2,}(?![\d/-]|[.,]\d)", lambda m: m.group().replace(" ", ""), t)


# Tokenizer control text a model or a scrape left in a record ("<|endoftext|>", "</s>", "[PAD]").
SPECIAL_TOKENS = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?s>|<(?:pad|unk|eos|bos|sep|cls|mask)>"
                            r"|\[(?:PAD|UNK|SEP|CLS|MASK|EOS|BOS)\]", re.I)


def strip_special_tokens(text: str) -> str:
    """Drop tokenizer control text; it is never part of what is said or reasoned."""
    return SPECIAL_TOKENS.sub(" ", text)


def _marks(text: str) -> str:
    """Inch and foot marks after a number (``64"``, ``5' 10"``, ``12′``) become unit words; a quote
    mark that closes a quotation opened before the number stays a quote."""

    def unit(m: re.Match) -> str:
        mark, start = m.group(2), m.start(2)
        line = text[text.rfind("\n", 0, start) + 1:start]
        if mark == '"' and len(re.findall(r'(?<!\d)"', line)) % 2:
            return m.group()  # closes 'He wrote "42"'
        if mark == "'" and re.search(r"(?:^|[\s(\[])'(?=\w)[^']*$", line):
            return m.group()  # closes 'he said 'take 5''
        return f"{m.group(1)} {_MARK_UNITS[mark]} "

    return re.sub(r"(\d(?:\.\d+)?)(''|[\u2032\u2033\"'])(?![A-Za-z'\"])", unit, text)


# A dash between two operands of a formula ("zx – y", "(x - 2) – 2", "5 — 3") is a minus sign; beside
# a word ("apples – 5 of them") it is a pause. Short English words are not variables.
_NOT_VARIABLES = {"a", "i", "an", "am", "as", "at", "be", "by", "do", "go", "he", "if", "in", "is", "it", "me",
                  "my", "no", "of", "on", "or", "so", "to", "up", "us", "we", "the", "and", "for", "per"}
_DASH_OPERAND_LEFT = r"(?:\d[A-Za-z]{0,2}|(?<![A-Za-z])[a-z]{1,2}|[)\]])"
_DASH_OPERAND_RIGHT = r"(?:\d|[a-z]{1,2}(?![A-Za-z])|[(\[\u221a])"
MINUS = "\x06"  # a dash known to be a minus sign; said "minus" whatever the context


def _formula_dashes(text: str) -> str:
    def sub(m: re.Match) -> str:
        left, right = m.group(1), m.group(3)
        if left.lower() in _NOT_VARIABLES or right.lower() in _NOT_VARIABLES:
            return m.group()
        return f"{left} {MINUS} {right}"

    return re.sub("(" + _DASH_OPERAND_LEFT + r")(\s*[\u2013\u2014]\s*)(" + _DASH_OPERAND_RIGHT + r"[a-z]?)", sub, text)


_MARK_UNITS = {'"': "inches", "''": "inches", "\u2033": "inches", "'": "feet", "\u2032": "feet"}


def _prepare(text: str) -> str:
    """Steps both speakable and clean_response take: unicode, marks, markup, LaTeX, abbreviations."""
    t = _normalize(_formula_dashes(_marks(strip_special_tokens(text))))
    t = re.sub(r"<<[^>]*>>", " ", t)  # GSM8K calculator marks
    t = re.sub(r"(?<=\d)\s*/-", " ", t)  # "Rs.75/-": the Indian mark for a whole amount, not "over"
    t = re.sub(r"\s*(?:<=>|<==>|\u21d4)\s*", " , which means ", t)
    t = re.sub(r"\s*(?:=+>|\u21d2|\u27f9)\s*", " , so ", t)  # "=>" in a worked solution: "so", not "is greater than"
    t = re.sub(r"(?<![\\A-Za-z])sqrt\s*(?=[\d(])", "\u221a", t)  # "5sqrt 10", "sqrt(2)" written without LaTeX
    # "5.02 A.M.": a dot between hours and minutes before am/pm is a clock time, not a decimal.
    t = re.sub(r"(?<![\d.:])(\d{1,2})\.([0-5]\d)(?=\s*[AaPp]\.?\s?[Mm]\b)", r"\1:\2", t)
    t = strip_markup(t)
    t = t.replace("\\%", "%")
    t = _latex(t)
    return group_thousands(_abbreviations(t))


_TIME = (r"(?<![\d.:])(?P<h>\d{1,2}):(?P<m>[0-5]\d)(?!\d|\s*:\s*\d)(?:\s*(?P<ap>[AaPp])\.?\s?[Mm]\b\.?)?"
         r"|(?<![\d.:])(?P<h2>\d{1,2})\s*(?P<ap2>[AaPp])\.?\s?[Mm]\b\.?(?![A-Za-z])")


def _times(t: str, digits: bool = False) -> str:
    """Clock times into words (``digits``: kept as written); a range between two times reads "to"."""

    def sub(m: re.Match) -> str:
        h = int(m.group("h") or m.group("h2"))
        sentence = m.string[max(m.string.rfind(".", 0, m.start()), m.string.rfind("?", 0, m.start()), 0):m.start()]
        if h > 23 or (m.group("m") and not m.group("ap") and re.search(r"\b(?:ratio|proportion)s?\b", sentence, re.I)):
            return m.group()  # "the ratio of 7:11" is read "seven to eleven" below
        ap = (m.group("ap") or m.group("ap2") or "").lower()
        if digits:  # "5:02 A.M." -> "5:02 a m", as it is said (the reader takes both)
            said = (f"{h}:{m.group('m')}" if m.group("m") else str(h)) + (f" {ap} m" if ap else "")
        else:
            said = time_words(h, int(m.group("m") or 0), ap)
        return f" \x03{said}\x04 "

    t = re.sub(_TIME, sub, t)
    return re.sub(r"\x04\s*(?:-|to|until|till)\s*\x03", " to ", t).replace("\x03", "").replace("\x04", "")


def _ratios(t: str, digits: bool = False) -> str:
    """A ratio of three or more terms ("2:3:5", "2 : 3 : 4") is read "two to three to five"."""
    w = str if digits else integer_words
    return re.sub(r"(?<![\d.:])\d+(?:\s*:\s*\d+){2,}(?![\d:]|\.\d)",
                  lambda m: " " + " to ".join(w(x) for x in re.findall(r"\d+", m.group())) + " ", t)


def _money(t: str, digits: bool = False) -> str:
    """Currency amounts; a unit word repeating the sign ("$8 dollars", "$0.50 cents") is said once."""

    def amount(m: re.Match) -> str:
        sym, a, scale, unit = m.group(1), m.group(2), m.group(3) or "", (m.group(4) or "").lower()
        one, many, cent, cents = _CURRENCY[sym]
        if re.fullmatch(_SUBUNIT_WORDS, unit) and not scale:
            v = float(a.replace(",", ""))
            if v >= 1:  # "$50 cents": fifty cents
                return f" {a if digits else number_words(a)} {cents} "
            if not digits:
                return f" {money_words(sym, a)} "
        if digits:
            return f" {a}{scale} {one if a == '1' and not scale else many} "
        return f" {money_words(sym, a, scale)} "

    # "$20 bills": the amount names the kind of bill, said "twenty-dollar bills" (not "twenty dollars bills").
    t = re.sub(r"([$€£₹])\s*(\d+)(?:\s*-?\s*(?:" + _UNIT_WORDS + r"))?(?=\s*-?\s*(?:bills?|notes?|coins?|checks?|cheques?)\b)",
               lambda m: f" {m.group(2) if digits else integer_words(m.group(2))}-{_CURRENCY[m.group(1)][0]} ", t, flags=re.I)
    t = re.sub(r"([$€£₹])\s*(" + NUM + r")(" + SCALE + r")(?:\s*(" + _UNIT_WORDS + r")\b)?", amount, t, flags=re.I)
    t = re.sub(r"([$€£₹])\s*([A-Za-z])\b(?![A-Za-z'])(?:\s*(?:" + _UNIT_WORDS + r")\b)?",
               lambda m: f" {m.group(2)} {_CURRENCY[m.group(1)][1]} ", t)  # "$x": x dollars
    if not digits:
        t = re.sub(r"(" + NUM + r")\s*([$€£])", lambda m: f" {money_words(m.group(2), m.group(1))} ", t)
        t = re.sub(r"(?<![\d.])(\d+(?:\.\d+)?|\.\d+)\s*(?:¢|cents?\b)", lambda m: f" {number_words(m.group(1))} cents ", t)
        # "4.50 dollars" (a response keeps digits) is said as money, not "four point five zero dollars".
        words = {"dollar": "$", "euro": "€", "pound": "£", "rupee": "₹"}
        t = re.sub(r"(?<![\d.,])(\d+\.\d{1,2}|\d{1,3}(?:,\d{3})+\.\d{1,2})\s+(dollar|euro|pound|rupee)s?\b",
                   lambda m: f" {money_words(words[m.group(2).lower()], m.group(1))} ", t, flags=re.I)
    return t.replace("$", " ").replace("₹", " rupees ")  # any other $ is a LaTeX math delimiter


_FRAC = r"(?<![\d./])(\d+)/(\d+)(?:st|nd|rd|th)?s?(?![\d/]|\.\d)"


def _fractions(t: str, whole_words: bool = True) -> str:
    w = integer_words if whole_words else str
    t = re.sub(r"(?<![\d./])(\d+)\s+" + _FRAC[len("(?<![\\d./])"):],
               lambda m: f" {w(m.group(1))} and {fraction_words(m.group(2), m.group(3))} ", t)
    t = re.sub(_FRAC, lambda m: f" {fraction_words(m.group(1), m.group(2))} ", t)
    return re.sub(r"(?<=\d)\s+/\s+(?=\d)", " divided by ", t)


# An operand next to a spaced minus: a number, a one-letter variable, a closing bracket or quantity.
_OPERAND_BEFORE = r"(?:(?<=\d)|(?<=[)\]\x02])|(?<=(?<![A-Za-z])[A-Za-z]))"
_OPERAND_AFTER = r"(?=\d|[(\[\x01]|[A-Za-z](?![A-Za-z]))"
_MATH_CONTENT = re.compile(r"[\s\d.,+\-*/^=<>×÷a-zA-Z\x01\x02\x06]*")
_OPERATOR = re.compile(r"[+\-*/^=<>×÷\x06]|\bdivided by\b")


def _is_math(content: str) -> bool:
    c = re.sub(r"\x01[^\x01\x02]*\x02", " q ", content)
    c = re.sub(r"\b(?:squared|cubed|divided by|over|to the power of|the (?:square|cube) root of)\b", " + ", c)
    if not _MATH_CONTENT.fullmatch(c) or not re.search(r"[\d\w]", c):
        return False
    return all(len(w) == 1 for w in re.findall(r"[A-Za-z]+", c))  # variables only, no prose


def _brackets(t: str) -> str:
    """Innermost first: a bracketed expression becomes "the quantity ...", with implied products."""

    def sub(m: re.Match) -> str:
        before, content = m.group(1), m.group(2)
        if not _is_math(content):
            return f"{before}, {content}, "
        inner = content.strip()
        quantity = bool(_OPERATOR.search(re.sub(r"\x01[^\x01\x02]*\x02", "", inner).lstrip("-")))
        lead = " times " if re.search(r"(?:\d|(?<![A-Za-z])[A-Za-z]|[)\]\x02])\s*$", before) else " "
        return f"{before}{lead}\x01 the quantity {inner}\x02" if quantity else f"{before}{lead}{inner} "

    prev = None
    while prev != t:
        prev = t
        t = re.sub(r"([^(\[]*?)[(\[]([^()\[\]]*)[)\]]", sub, t, count=1)
    t = re.sub(r"\x02\s*(?=[(\[\x01]|\d|[A-Za-z](?![A-Za-z]))", "\x02 times ", t)  # (a+b)(a-b), (x+1)2
    return t


def _math(t: str, math_ctx: bool, digits: bool = False) -> str:
    t = re.sub(r"\|([^|\n]{1,60})\|", r" the absolute value of (\1) ", t)
    t = re.sub(r"(?<=\d)\s*(?=[√∛])", " times ", t)
    t = re.sub(r"∛\s*", " the cube root of ", t)
    t = re.sub(r"√\s*(" + NUM + r"|[A-Za-z](?![A-Za-z]))?", lambda m: f" the square root of {m.group(1) or ''} ", t)
    t = _brackets(t)
    t = re.sub(r"(?<![A-Za-z])([A-Za-z])-(?=\d)", r"\1 minus ", t)  # "M-3"
    t = re.sub(r"(?<=\d)-(?=[A-Za-z](?![A-Za-z]))", " minus ", t)  # "3-x"
    t = re.sub(r"(?<![A-Za-z])([A-Za-z])-([A-Za-z])(?![A-Za-z])", r"\1 minus \2", t)  # "x-y"
    t = re.sub(_OPERAND_BEFORE + r"\s+-\s+" + _OPERAND_AFTER, " minus ", t)
    # "89 -90", "x^3-7": a minus right before a number, after an operand or a power, is subtraction
    # (the reader takes it so), never a sign.
    t = re.sub(_OPERAND_BEFORE + r"\s+-(?=\d)", " minus ", t)
    t = re.sub(r"\b(squared|cubed)\s*-\s*(?=[\d(\x01]|[A-Za-z](?![A-Za-z]))", r"\1 minus ", t)
    t = re.sub(r"(?<=[\w)\x02])\s+-\s+(?=[\w(\x01])", " minus " if math_ctx else ", ", t)
    t = re.sub(r"(?<=\d)-(?=\d)", " minus " if math_ctx else " to ", t)
    sign = r"(?=[A-Za-z](?![A-Za-z]))" if digits else r"(?=\.?\d|[A-Za-z](?![A-Za-z]))"  # digits keep "-10"
    t = re.sub(r"(?:(?<=^)|(?<=[\s(=,:;\x01]))-" + sign, " negative ", t)
    t = re.sub(r"(?<=[\d)\x02])\s*[x*×]\s*(?=[\d(.\x01])", " times ", t)
    return t.replace("\x01", " ").replace("\x02", ", ").replace(MINUS, " minus ")


_CARDINALS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
              "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety").split()
_CARDINAL = r"(?:" + "|".join(_CARDINALS) + r"|hundred|thousand|million|billion)"


def _separate_numbers(t: str) -> str:
    """Two numbers side by side must not be heard as one ("7 45-cent" -> "seven, forty-five cent",
    "100 and 86" -> "one hundred, and eighty-six", "four 12-pound" -> "four, twelve pound")."""
    t = re.sub(r"(?<=\d)\s+(?=\d)", ", ", t)
    # "60 and 780", "100 and 86": said without a pause they read as 6780 and 186.
    t = re.sub(r"(?<![\d.,])([2-9]\d|\d{3,})\s+and\s+(?=\d)", r"\1, and ", t)
    # "500 third-graders", "20 fourth graders": read back as 503rd, 24th without the pause.
    t = re.sub(r"(?<![\d.,])(\d*0)\s+(?=(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)\b)", r"\1, ",
               t, flags=re.I)
    t = re.sub(r"\b(" + _CARDINAL + r")\s+(?=\d)", r"\1, ", t, flags=re.I)
    return re.sub(r"(?<=\d)\s+(?=" + _CARDINAL + r"\b)(?!hundred|thousand|million|billion)", ", ", t, flags=re.I)


def speakable(text: str) -> str:
    """Speakable English for a TTS: no digits, LaTeX or math symbols remain; numbers keep their value."""
    t = _prepare(text)
    math_ctx = bool(re.search(r"[=+*^\\]", t))  # a spaced hyphen between words is "minus" in math, a pause in prose
    t = _times(t)
    t = _money(t)
    t = _fractions(t)
    t = re.sub(r"(" + NUM + r")\s*%(?:\s*percent\b)?", lambda m: f" {number_words(m.group(1))} percent ", t)  # "40% percent"
    t = _ratios(t)
    t = re.sub(r"(?<![\d.])(\d+)\s*:\s*(\d+)(?!\d|\.\d)",
               lambda m: f" {integer_words(m.group(1))} to {integer_words(m.group(2))} ", t)
    t = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: f" {ordinal_words(int(m.group(1)))} ", t, flags=re.I)
    t = _math(t, math_ctx)
    t = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", t)  # "5km" -> "5 km", "x2" -> "x 2"
    t = _separate_numbers(t)
    # "1/X", "x/3": a fraction, not "one per X" (a unit, "miles/hour", is read "per" below).
    t = re.sub(r"(?<=\d)\s*/\s*(?=[A-Za-z](?![A-Za-z]))|(?<=(?<![A-Za-z])[A-Za-z])\s*/\s*(?=\d)", " over ", t)
    t = re.sub(NUM, lambda m: f" {number_words(m.group())} ", t)
    t = re.sub(r"\band/or\b", "and or", t)
    for sym, word in (("<=", " is at most "), (">=", " is at least "), ("!=", " is not equal to "),
                      ("=", " equals "), ("<", " is less than "), (">", " is greater than "), ("+", " plus "),
                      ("*", " times "), ("^", " to the power of "), ("%", " percent "), ("#", " number "),
                      ("&", " and "), ("@", " at ")):
        t = t.replace(sym, word)
    t = re.sub(r"(?<=[A-Za-z])\s*/\s*(?=[A-Za-z])", " per ", t)
    t = t.replace("/", " over ")
    t = re.sub(r"[^A-Za-z0-9' .,?!;:\-]", " ", t)  # quotes, stray symbols
    t = re.sub(r"(?<!\w)-+|-+(?!\w)", " ", t)  # dashes that are not inside a word
    return _tidy(t)


def _tidy(t: str) -> str:
    t = re.sub(r"\s+", " ", t)
    t = re.sub(r"\s+([.,?!;:])(?!\d)", r"\1", t)
    t = re.sub(r"([.,?!;:])(?=[A-Za-z])", r"\1 ", t)
    t = re.sub(r"[,;:]+\s*([.?!])", r"\1", t)
    t = re.sub(r"([,;:])(?:\s*[,;:.])+", r"\1", t)
    t = re.sub(r"\.{2,}", ".", t)
    t = re.sub(r"^[\s,;:.]+", "", t)
    return t.strip(" ,;:")


# --- response: numbers stay as digits ------------------------------------------------------------
def clean_response(text: str) -> str:
    """Spoken-response text: numbers stay digits, every other symbol becomes words or goes."""
    t = _prepare(text)
    t = _times(t, digits=True)
    t = _money(t, digits=True)
    t = _fractions(t, whole_words=False)
    t = _ratios(t, digits=True)
    t = re.sub(r"(" + NUM + r")\s*%(?:\s*percent\b)?", r" \1 percent ", t)
    t = _math(t, math_ctx=True, digits=True)
    for sym, word in (("<=", " is at most "), (">=", " is at least "), ("=", " is "), ("<", " is less than "),
                      (">", " is greater than "), ("+", " plus "), ("*", " times "), ("^", " to the power of "),
                      ("%", " percent "), ("&", " and "), ("#", " number ")):
        t = t.replace(sym, word)
    t = re.sub(r"(?<=[A-Za-z])\s*/\s*(?=[A-Za-z])", " per ", t)
    t = t.replace("/", " over ")
    t = re.sub(r"[^A-Za-z0-9' .,?!;:\-]", " ", t)
    t = re.sub(r"(?<=\D):|:(?=\D)", " ", t)  # a colon between digits is a clock time; elsewhere a pause
    t = re.sub(r"(?<![\w])-(?!\d)|(?<=\w)-(?!\w)", " ", t)
    return _tidy(t)


FORBIDDEN = set("<>$%/=*\\{}^_#&@+|[]`~") | set("0123456789")


def unspeakable_chars(spoken: str) -> set[str]:
    """Characters a spoken question must not hold (digits and math symbols); empty when clean."""
    return {c for c in spoken if c in FORBIDDEN}


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["She pays $12.50 for 3/4 of a 1,200 g cake (15% off) at 3:30 pm on the 2nd day."]:
        print(speakable(arg))
        print(clean_response(arg))

"""How long a TTS voice takes to say a text, estimated from its letters, digits and punctuation.

The talker's duration pace (models/talker.py) reads each spoken token for ``said_seconds`` of it, the
session bounds a response's audio by ``speaking_seconds``, and the synthesize stage's alignment
(tasks/synth/timing.py) shares a word's measured time among its tokens by ``said_seconds``. No
dependencies, so the synthesize stage does not depend on the model code.
"""

from __future__ import annotations

# How long a TTS voice takes to say a text: espeak at the synthesize stage's slowest rate spends
# ~0.065 s per letter and ~0.45 s per digit (a digit of "7178479" is a word and a scale: "seven
# million one hundred ..."); punctuation is a pause.
SECONDS_PER_LETTER = 0.065
SECONDS_PER_DIGIT = 0.45
PAUSE_SECONDS = {",": 0.15, ";": 0.2, ":": 0.2, ".": 0.3, "?": 0.3, "!": 0.3}


def speaking_seconds(text: str) -> float:
    """Estimated seconds a TTS voice takes to say ``text`` (letters and digits; see SECONDS_PER_LETTER)."""
    return SECONDS_PER_LETTER * sum(c.isalpha() for c in text) + SECONDS_PER_DIGIT * sum(c.isdigit() for c in text)


def said_seconds(text: str) -> float:
    """``speaking_seconds`` plus the pause each punctuation mark adds: what the duration pace spends on ``text``."""
    return speaking_seconds(text) + sum(PAUSE_SECONDS.get(c, 0.0) for c in text)


# --- numbers: said as words, not digit by digit ------------------------------------------------------
# A number written in digits is one spoken word group whose length depends on all its digits: "3162" is
# "three thousand one hundred and sixty-two" (33 letters), "176286" "one hundred seventy-six thousand two
# hundred eighty-six". At 0.45 s a digit the talker's estimated token ends missed the aligned ones by 32
# frames on average (100 validation answers of a make pipeline), 41 on digits; reading each number as its
# words and sharing that among its tokens: 10.5 frames (bench/bench_pace.py, README "Numbers said as words").
NUMBER_SEPARATORS = (",", ".")  # inside a number only between two digits: "1,200", "3.5"


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # not "²", which str.isdigit accepts


def number_seconds(number: str) -> float:
    """Estimated seconds to say ``number`` (digits, maybe one ``.`` and thousands commas) as English words,
    as the synthesize stage's TTS text says it (num2words; longer than 15 digits: digit by digit)."""
    from num2words import num2words

    s = number.replace(",", "")
    whole, _, frac = s.partition(".")
    if not _digits(whole) or (frac and not _digits(frac)):
        raise ValueError(f"not a number in digits: {number!r}")
    digit = " four"  # a digit read on its own ("point two five"; a long id): one short word
    words = num2words(int(whole)) if len(whole) <= 15 else digit * len(whole)
    frac = frac.rstrip("0")
    if frac:
        words += " point" + digit * len(frac)
    return speaking_seconds(words)


def number_runs(texts) -> list[list[int]]:
    """Indices of each number written in digits among the token ``texts`` (``None``: a token that says
    nothing and does not break a number), as ``SaidDurations`` groups them: digits, and a separator only
    between two digits ("1,200"; the "." of "is 42." ends a sentence, not a number)."""
    runs, run = [], []

    def close() -> None:
        while run and not _digits(texts[run[-1]]):
            run.pop()
        if run:
            runs.append(run.copy())
        run.clear()

    for k, t in enumerate(texts):
        if t is None:
            continue
        if _digits(t) or (run and t in NUMBER_SEPARATORS and _digits(texts[run[-1]])):
            run.append(k)
        else:
            close()
    close()
    return runs


class SaidDurations:
    """Seconds each spoken token of a text takes to say, token by token as a stream brings them.

    ``push(text, seconds)`` one token's text (``None`` for a token that says nothing and does not break a
    number: a special token or pad; it gets 0 at once) and its own seconds (``None``: ``said_seconds`` of
    the text; a learned table's entry otherwise, ``models.talker.learn_seconds``) and get back ``(index,
    seconds)`` of every token whose duration is now known:
    most at once, but the tokens of a number in digits only when the number has ended (the next token is
    neither a digit nor a separator followed by one), as they share ``number_seconds`` of it in proportion
    to their own ``said_seconds``, times ``number_scale`` (measured seconds of a number's words per
    estimated second, ``learn_seconds``; 1 = the estimate). ``flush()`` at the end. ``numbers=False``: each
    token's own seconds at once (0.45 s a digit)."""

    def __init__(self, numbers: bool = True, number_scale: float = 1.0) -> None:
        if not number_scale > 0:
            raise ValueError(f"number_scale must be positive, got {number_scale!r}")
        self.numbers = numbers
        self.number_scale = float(number_scale)
        self.n = 0  # tokens pushed
        self.run: list[tuple[int, str, float]] = []  # the number being read: (index, text, own seconds)

    def push(self, text: str | None, seconds: float | None = None) -> list[tuple[int, float]]:
        i = self.n
        self.n += 1
        if text is None:
            return [(i, 0.0)]
        own = said_seconds(text) if seconds is None else float(seconds)
        if not self.numbers:
            return [(i, own)]
        if _digits(text) or (self.run and text in NUMBER_SEPARATORS and _digits(self.run[-1][1])):
            self.run.append((i, text, own))
            return []
        return self._close() + [(i, own)]  # the number (if any) ended before this token

    def flush(self) -> list[tuple[int, float]]:
        return self._close()

    def _close(self) -> list[tuple[int, float]]:
        run, self.run = self.run, []
        if not run:
            return []
        tail = []
        while run and not _digits(run[-1][1]):  # a trailing separator ends a sentence: "is 42."
            tail.insert(0, run.pop())
        est = [said_seconds(t) for _, t, _ in run]
        try:
            total = number_seconds("".join(t for _, t, _ in run)) * self.number_scale
        except ValueError:  # "1.2.3", a version or a date: digit by digit as before, each its own seconds
            return [(i, own) for i, _, own in run + tail]
        scale = total / sum(est)
        return [(i, w * scale) for (i, _, _), w in zip(run, est)] + [(i, own) for i, _, own in tail]


def said_durations(texts, numbers: bool = True, seconds=None, number_scale: float = 1.0) -> list[float]:
    """``SaidDurations`` over a whole token sequence: seconds per token (0 for ``None``); ``seconds``, if
    given, each token's own seconds (``None`` entries: the estimate)."""
    d = SaidDurations(numbers, number_scale)
    out = [0.0] * len(texts)
    for k, t in enumerate(texts):
        for i, s in d.push(t, None if seconds is None else seconds[k]):
            out[i] = s
    for i, s in d.flush():
        out[i] = s
    return out


def spoken_spans(starts, spoken, total: float) -> list[tuple[int, float, float]]:
    """``(index, start, end)`` seconds of each spoken token of a response whose tokens start at ``starts``
    (``response_starts``: espeak's word times shared among tokens) in speech lasting ``total`` seconds;
    ``spoken[k]`` says whether token ``k`` is said at all. A spoken token lasts until the next spoken token
    starts, the last until the speech ends (never a negative span). The talker's aligned frames
    (``tasks.core.examples.frame_ends``) and its learned token seconds (``models.talker.learn_seconds``)
    both read a response's timing this way."""
    kept = [k for k, s in enumerate(spoken) if s]
    ends = [float(starts[k]) for k in kept[1:]] + [float(total)]
    spans, last = [], 0.0
    for k, e in zip(kept, ends):
        start = float(starts[k])
        last = max(last, e)  # a later start never moves an end back
        spans.append((k, start, max(start, last)))
    return spans

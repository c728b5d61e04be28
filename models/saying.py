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

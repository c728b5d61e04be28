"""When each response token is said: espeak's word times (models/tts.py), their mapping onto the
response's tokens (tasks/synth/timing.py), the dataset column and the talker's frame ends
(tasks/core/examples.py ``frame_ends``).

    .venv/bin/python -m pytest tests/test_synth_timing.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from models.saying import said_seconds
from tasks.synth.timing import spoken_pieces, token_starts, word_starts


def test_espeak_word_times_are_where_the_words_start_in_the_audio():
    """After each sentence pause the audio is silent just before a word's reported start and loud just
    after it: the times are seconds into the returned waveform (a misread event field or a lost ms -> s
    scale puts them in the pause or the speech)."""
    from models.tts import EspeakTTS

    text = "Seven. Twelve. Ninety-four. Apples."
    wav, sr, words = EspeakTTS("en-us+f3", 160, 50).synthesize_timed(text)
    assert [text[c:c + 3] for c, _ in words] == ["Sev", "Twe", "Nin", "App"]
    times = [t for _, t in words]
    assert times == sorted(times) and 0 <= times[0] < 0.1 and times[-1] < len(wav) / sr

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(wav[int(a * sr):int(b * sr)] ** 2)))

    for t in times[1:]:
        assert rms(t - 0.12, t - 0.02) < 0.01 < 0.03 < rms(t + 0.02, t + 0.15), t


def test_synthesize_is_synthesize_timed_without_the_times():
    from models.tts import EspeakTTS

    tts = EspeakTTS("en-us", 175, 50)
    a, sr = tts.synthesize("The answer is twelve.")
    b, sr2, words = tts.synthesize_timed("The answer is twelve.")
    assert sr == sr2 and len(words) == 4 and abs(len(a) - len(b)) < sr // 50


def test_response_words_map_onto_their_spoken_words():
    assert spoken_pieces("Tom has 47 apples.", "Tom has forty-seven apples.") == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert spoken_pieces("It is 1,200.", "It is one thousand two hundred.") == [(0, 1), (1, 2), (2, 6)]
    assert spoken_pieces("It is 12.", "It is thirteen.") is None  # the speech says something else


def test_word_starts_fill_words_espeak_merged():
    spoken = "one two three four"
    # espeak reported no event for "two" and "three": placed between "one" and "four" by estimate
    starts = word_starts(spoken, [(0, 0.0), (14, 1.5)], said_seconds, 2.0)
    assert starts[0] == 0.0 and starts[3] == 1.5
    assert 0.0 < starts[1] < starts[2] < 1.5
    # an event on the space before a word belongs to that word
    assert word_starts("one two", [(0, 0.0), (3, 0.4)], said_seconds, 1.0) == [0.0, 0.4]


def test_token_starts_put_each_token_in_its_word():
    response = "Tom has 47."
    spoken = "Tom has forty-seven."
    tokens = ["Tom", " has", " ", "4", "7", "."]
    events = [(0, 0.05), (4, 0.4), (8, 0.9)]
    starts = token_starts(tokens, response, spoken, events, 2.0, said_seconds)
    assert starts[:3] == [0.05, 0.4, 0.9]  # the space before "47" starts with it (it says nothing)
    # "4", "7" and "." share [0.9, 2.0) by estimated seconds: 0.45, 0.45, 0.3
    assert starts[3] == pytest.approx(0.9) and starts[4] == pytest.approx(0.9 + 1.1 * 0.45 / 1.2)
    assert starts[5] == pytest.approx(0.9 + 1.1 * 0.9 / 1.2)
    assert token_starts(["Tom", " has"], "Tom has 47.", spoken, events, 2.0, said_seconds) is None  # not the response
    assert token_starts(tokens, response, spoken, [], 2.0, said_seconds) is None  # no word times


def test_frame_ends_keep_only_spoken_tokens():
    from tasks.core.examples import frame_ends

    weights = {1: 0.5, 2: 0.0, 3: 0.3, 4: 0.2}
    # tokens 1, 2 (silent), 3, 4 start at 0.0, 0.5, 0.5, 1.5 s of a 2 s clip of 100 frames
    assert frame_ends([1, 2, 3, 4], [0.0, 0.5, 0.5, 1.5], 2.0, 100, weights) == [25, 75, 100]
    assert frame_ends([1, 2, 3, 4], [], 2.0, 100, weights) is None
    assert frame_ends([1, 2, 3], [0.0, 0.5, 0.5, 1.5], 2.0, 100, weights) is None  # starts of another text

"""TTS backends: real 16 kHz speech from espeak-ng (no system package), clear errors otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from models.tts import SAMPLE_RATE, EspeakTTS, TTSBackend, TTSError, make_tts

SENTENCE = "Tom has twelve apples and gets seven more. How many apples does Tom have now?"


def rms(w: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(w))))


def test_espeak_makes_real_speech():
    tts = EspeakTTS()
    assert isinstance(tts, TTSBackend)
    wav, sr = tts.synthesize(SENTENCE)
    assert sr == SAMPLE_RATE == 16000
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.abs(wav).max() <= 1.0
    seconds = len(wav) / sr
    n_words = len(SENTENCE.split())
    assert 0.2 * n_words < seconds < 0.8 * n_words  # ~175 words/minute
    assert rms(wav) > 0.02
    # speech has pauses: some 20 ms frames are much quieter than the loudest ones
    frames = wav[: len(wav) // 320 * 320].reshape(-1, 320)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert energy.min() < 0.1 * energy.max()


def test_rate_and_voice_change_the_audio():
    slow, _ = EspeakTTS(rate=120).synthesize(SENTENCE)
    fast, _ = EspeakTTS(rate=260).synthesize(SENTENCE)
    assert len(fast) < 0.7 * len(slow)
    a, _ = EspeakTTS("en-us", pitch=30).synthesize("seven")
    b, _ = EspeakTTS("en-us+f3", pitch=70).synthesize("seven")
    n = min(len(a), len(b))
    assert len(a) != len(b) or not np.allclose(a[:n], b[:n])


def test_instances_do_not_leak_settings():
    """libespeak is a process-wide singleton: each instance must re-apply its own voice and rate."""
    slow = EspeakTTS(rate=120)
    first, _ = slow.synthesize(SENTENCE)
    EspeakTTS(rate=300).synthesize(SENTENCE)
    again, _ = slow.synthesize(SENTENCE)
    assert abs(len(again) - len(first)) < 0.05 * len(first)


def test_errors_name_the_fix():
    with pytest.raises(TTSError, match="no voice"):
        EspeakTTS("xx-nothing")
    with pytest.raises(TTSError, match="80-450"):
        EspeakTTS(rate=20)
    with pytest.raises(TTSError, match="empty"):
        EspeakTTS().synthesize("  ")
    with pytest.raises(TTSError, match="unknown tts backend"):
        make_tts("festival")


def test_piper_is_optional():
    try:
        import piper  # noqa: F401
    except ImportError:
        with pytest.raises(TTSError, match="pip install piper-tts"):
            make_tts("piper", model_path="/nonexistent/voice.onnx")
    else:
        with pytest.raises(TTSError, match="not found"):
            make_tts("piper", model_path="/nonexistent/voice.onnx")


def test_asr_hears_speech_not_silence():
    from models.asr import SphinxChecker, words

    wav, sr = EspeakTTS().synthesize(SENTENCE)
    other = "A garden has four rows of nine plants and three more plants by the fence."
    checker = SphinxChecker(words(SENTENCE) + words(other))
    heard, hyp = checker.recall(wav, SENTENCE, sr)
    assert heard >= 0.4, hyp
    silent, _ = checker.recall(np.zeros(3 * sr, np.float32), SENTENCE, sr)
    noise, _ = checker.recall(np.random.default_rng(0).normal(0, 0.1, 3 * sr).astype(np.float32), SENTENCE, sr)
    assert silent < 0.15 and noise < 0.15


def test_asr_words_need_spoken_text():
    from models.asr import words

    assert words("Twenty-one apples, Tom's") == ["twenty", "one", "apples", "tom's"]
    with pytest.raises(ValueError, match="numbers in words"):
        words("21 apples")


def test_speech_models_import_nothing_from_tasks():
    """Layering: models/ never imports tasks/ or flows/ (checked on the speech modules' imports)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "models"
    for name in ("asr.py", "tts.py", "drift.py"):
        tree = ast.parse((root / name).read_text())
        mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in mods if m.split(".")[0] in ("tasks", "flows")], (name, mods)


def test_espeak_output_is_resampled_by_the_shared_helper(monkeypatch):
    """The 22.05 kHz espeak output goes through models.wave.resample (one resampler in the project)."""
    from models import tts, wave

    assert tts.resample is wave.resample  # no private copy
    calls = []
    real = wave.resample

    def spy(w, sr, target):
        calls.append((sr, target))
        return real(w, sr, target)

    monkeypatch.setattr(tts, "resample", spy)
    EspeakTTS().synthesize("seven")
    assert calls and calls[0][1] == SAMPLE_RATE and calls[0][0] != SAMPLE_RATE

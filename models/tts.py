"""Text-to-speech backends: 16 kHz mono float32 speech from text.

The default backend, :class:`EspeakTTS`, needs no system package: ``espeakng-loader`` ships
libespeak-ng and its data, which we drive through ctypes (``espeak_Initialize`` with
AUDIO_OUTPUT_SYNCHRONOUS and a callback that collects int16 samples), then resample 22.05 kHz to
16 kHz (``models.wave.resample``). :class:`PiperTTS` is an optional neural backend
(``pip install piper-tts`` and a voice ``.onnx`` file). ``make_tts(kind, **kw)`` builds either by name.

espeak-ng is not a pure function of its input: it keeps synthesis state across utterances in
process-wide statics (pitch-flutter phase, wave phase, ...) that no API resets, so the same text in
the same voice can come out a few samples longer or shorter after a different history. Speech is
reproducible per process history, not per call; checks downstream must not sit on a knife edge.

    python -m models.tts "What is twelve plus seven?" out.wav   # speak a sentence to a file
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from models.wave import resample

SAMPLE_RATE = 16000
TTSKind = Literal["espeak", "piper"]


def voice_name(voice: tuple[str, int, int]) -> str:
    """``("en-us", 175, 50)`` -> ``"en-us@175wpm/p50"`` (the dataset's ``voice`` columns; ``parse_voice``)."""
    return f"{voice[0]}@{voice[1]}wpm/p{voice[2]}"


def parse_voice(name: str) -> tuple[str, int, int]:
    """``voice_name``'s inverse; a ValueError names the form it expects."""
    import re

    m = re.fullmatch(r"(.+)@(\d+)wpm/p(\d+)", name.strip())
    if not m:
        raise ValueError(f"a voice is written 'name@RATEwpm/pPITCH' (e.g. en-us@175wpm/p50), got {name!r}")
    return m.group(1), int(m.group(2)), int(m.group(3))


class TTSError(RuntimeError):
    """Speech could not be produced; the message names the cause and the fix."""


@runtime_checkable
class TTSBackend(Protocol):
    """Anything that turns text into (mono float32 waveform in [-1, 1], sample rate)."""

    sample_rate: int

    def synthesize(self, text: str) -> tuple[np.ndarray, int]: ...


# --- espeak-ng through ctypes ------------------------------------------------------------------
# libespeak-ng is a process-wide singleton (one voice, one callback, not thread-safe): every
# EspeakTTS instance in a process shares it, and a lock serialises synthesis.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_VOLUME, _ESPEAK_PITCH = 1, 2, 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` (speak_lib.h): the callback gets an array of them, ended by type 0."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


def _word_events(events) -> list[tuple[int, float]]:
    """``(character offset, start seconds)`` of every word event in an ``espeak_EVENT`` array."""
    out = []
    if not events:
        return out
    ev = ctypes.cast(events, ctypes.POINTER(_EspeakEvent))
    i = 0
    while ev[i].type != _EVENT_LIST_TERMINATED:
        if ev[i].type == _EVENT_WORD:  # text_position counts characters from 1
            out.append((ev[i].text_position - 1, ev[i].audio_position / 1000.0))
        i += 1
    return out


class _Espeak:
    lock = threading.Lock()
    lib: ctypes.CDLL | None = None
    native_rate = 0
    chunks: list[np.ndarray] = []
    words: list[tuple[int, float]] = []
    callback = None  # keep the ctypes callback alive for the life of the process

    @classmethod
    def load(cls) -> ctypes.CDLL:
        if cls.lib is not None:
            return cls.lib
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise TTSError("espeakng-loader is not installed; `pip install espeakng-loader`") from e
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as e:
            raise TTSError(f"cannot load libespeak-ng from espeakng-loader ({e}); reinstall espeakng-loader") from e
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise TTSError(
                f"espeak_Initialize failed (returned {rate}); the espeak-ng data at "
                f"{espeakng_loader.get_data_path()} may be missing: reinstall espeakng-loader"
            )

        def collect(wav, n, events):
            if n > 0 and wav:
                cls.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            cls.words.extend(_word_events(events))
            return 0  # 0 = keep synthesizing

        cls.callback = _CALLBACK(collect)
        lib.espeak_SetSynthCallback(cls.callback)
        cls.native_rate = rate
        cls.lib = lib
        return lib


class EspeakTTS:
    """espeak-ng speech. ``voice``: an espeak voice name, optionally with a variant (``en-us+f3``);
    ``rate``: words per minute (80-450); ``pitch``: 0-100."""

    sample_rate = SAMPLE_RATE

    def __init__(self, voice: str = "en-us", rate: int = 175, pitch: int = 50):
        if not 80 <= rate <= 450:
            raise TTSError(f"espeak rate {rate} words/minute is out of range; use 80-450")
        if not 0 <= pitch <= 100:
            raise TTSError(f"espeak pitch {pitch} is out of range; use 0-100")
        self.voice, self.rate, self.pitch = voice, rate, pitch
        with _Espeak.lock:
            lib = _Espeak.load()
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise TTSError(
                    f"espeak has no voice {voice!r}; use e.g. 'en-us', 'en', 'en-gb-x-rp', 'en-us+f3', 'en-us+m2' "
                    "(variants are in espeak-ng-data/voices/!v)"
                )

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        wav, sr, _ = self.synthesize_timed(text)
        return wav, sr

    def synthesize_timed(self, text: str) -> tuple[np.ndarray, int, list[tuple[int, float]]]:
        """``synthesize`` plus when each word starts: ``(character offset in text, seconds)`` per word
        espeak says, in order (a number or a hyphenated word may be one word or several)."""
        if not text or not text.strip():
            raise TTSError("cannot speak empty text; pass a non-empty sentence")
        data = text.encode("utf-8") + b"\0"
        with _Espeak.lock:
            lib = _Espeak.load()
            # Voice and parameters are global: set them on every call, other instances may share them.
            if lib.espeak_SetVoiceByName(self.voice.encode()) != 0:
                raise TTSError(f"espeak has no voice {self.voice!r}")
            lib.espeak_SetParameter(_ESPEAK_RATE, self.rate, 0)
            lib.espeak_SetParameter(_ESPEAK_PITCH, self.pitch, 0)
            lib.espeak_SetParameter(_ESPEAK_VOLUME, 100, 0)
            _Espeak.chunks, _Espeak.words = [], []
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            chunks, _Espeak.chunks = _Espeak.chunks, []
            words, _Espeak.words = _Espeak.words, []
            native = _Espeak.native_rate
        if err != 0:
            raise TTSError(f"espeak_Synth failed with error {err} on text {text[:60]!r}")
        if not chunks:
            raise TTSError(f"espeak produced no audio for {text[:60]!r}")
        pcm = np.concatenate(chunks).astype(np.float32) / 32768.0
        return np.clip(resample(pcm, native, SAMPLE_RATE), -1.0, 1.0), SAMPLE_RATE, words


class PiperTTS:
    """Piper neural TTS (optional): ``pip install piper-tts`` and a voice ``.onnx`` (+ ``.onnx.json``)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model_path: str, speaker: int | None = None, length_scale: float = 1.0):
        try:
            from piper import PiperVoice  # type: ignore[import-not-found]
        except ImportError as e:
            raise TTSError(
                "the piper backend needs `pip install piper-tts` and a voice file "
                "(e.g. en_US-lessac-medium.onnx); or use tts backend 'espeak'"
            ) from e
        p = Path(model_path)
        if not p.exists():
            raise TTSError(f"piper voice file {p} not found; download a voice .onnx and its .onnx.json there")
        self.voice = PiperVoice.load(str(p))
        self.speaker, self.length_scale = speaker, length_scale

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        if not text or not text.strip():
            raise TTSError("cannot speak empty text; pass a non-empty sentence")
        chunks, sr = [], None
        for chunk in self.voice.synthesize(text):  # piper-tts >= 1.3 yields AudioChunk objects
            chunks.append(np.asarray(chunk.audio_float_array, dtype=np.float32))
            sr = chunk.sample_rate
        if not chunks or sr is None:
            raise TTSError(f"piper produced no audio for {text[:60]!r}")
        return np.clip(resample(np.concatenate(chunks), sr, SAMPLE_RATE), -1.0, 1.0), SAMPLE_RATE


def make_tts(kind: TTSKind = "espeak", **kw) -> TTSBackend:
    """``make_tts("espeak", voice="en-us+f3", rate=160)`` or ``make_tts("piper", model_path=...)``."""
    if kind == "espeak":
        return EspeakTTS(**kw)
    if kind == "piper":
        return PiperTTS(**kw)
    raise TTSError(f"unknown tts backend {kind!r}; use 'espeak' or 'piper'")


def write_wav(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    import soundfile as sf

    sf.write(str(path), wav, sr, subtype="PCM_16")


if __name__ == "__main__":
    import sys
    import time

    text = sys.argv[1] if len(sys.argv) > 1 else "What is twelve plus seven?"
    t0 = time.perf_counter()
    w, sr = EspeakTTS().synthesize(text)
    dt = time.perf_counter() - t0
    print(f"{len(w) / sr:.2f} s of speech at {sr} Hz in {dt:.3f} s (RTF {dt / (len(w) / sr):.4f})")
    if len(sys.argv) > 2:
        write_wav(sys.argv[2], w, sr)

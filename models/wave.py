"""Waveform helpers every audio path shares: mono float32, resampling, PCM16 bytes.

    w = as_mono(wave)                  # (samples,) float32; stereo (samples, ch) is averaged
    w16 = resample(w, 44100, 16000)    # polyphase (scipy)
    pcm = to_pcm16(w16)                # little-endian int16 bytes, clipped
"""

from __future__ import annotations

from math import gcd

import numpy as np


class WaveError(ValueError):
    """Audio that cannot be used as a mono waveform (the message says what was wrong)."""


def as_mono(wave: np.ndarray) -> np.ndarray:
    """``(samples,)`` or ``(samples, channels)`` (as soundfile returns it), int or float -> float32 mono."""
    w = np.asarray(wave)
    if w.ndim == 2:
        w = w.mean(axis=1) if not np.issubdtype(w.dtype, np.integer) else w.astype(np.float64).mean(axis=1) / (
            float(np.iinfo(w.dtype).max))
        return w.astype(np.float32, copy=False)
    if w.ndim != 1:
        raise WaveError(f"expected a mono wave of shape (samples,) or (samples, channels), got shape {w.shape}")
    if np.issubdtype(w.dtype, np.integer):
        w = w / float(np.iinfo(w.dtype).max)
    return w.astype(np.float32, copy=False)


def resample(wave: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling of a mono wave from ``sr`` to ``target_sr`` (float32)."""
    w = as_mono(wave)
    if sr <= 0 or target_sr <= 0:
        raise WaveError(f"sample rates must be positive, got {sr} -> {target_sr}")
    if sr == target_sr:
        return w
    from scipy.signal import resample_poly

    g = gcd(int(sr), int(target_sr))
    return resample_poly(w, target_sr // g, sr // g).astype(np.float32)


def to_pcm16(wave: np.ndarray) -> bytes:
    """Float wave in [-1, 1] -> little-endian PCM16 bytes (clipped)."""
    w = np.clip(as_mono(wave), -1.0, 1.0)
    return (w * 32767.0).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    """Little-endian PCM16 bytes -> float32 wave in [-1, 1]."""
    if len(data) % 2:
        raise WaveError(f"PCM16 data must have an even number of bytes, got {len(data)}")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0)

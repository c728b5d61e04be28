"""Audio input for Qwen2.5-Omni's thinker: log-mel features, the audio chat prompt, batch collation.

Qwen2.5-Omni's audio tower takes 128-bin Whisper log-mels of any length (it cuts them into windows
itself), selects the valid frames with ``feature_attention_mask`` and emits
``n_audio_tokens(L)`` embeddings per clip, which replace the ``<|AUDIO|>`` placeholders of the prompt.
So clips are not padded to 30 s; a batch pads only to its longest clip.

    feats, mask = log_mel(wave, sr)                          # (128, L), (L,)
    ids = audio_prompt(tokenizer, n_audio_tokens(feats.shape[1]))
    batch = collate_features([feats_a, feats_b])             # input_features (B,128,Lmax), mask (B,Lmax)
    out = model.thinker(input_ids=..., attention_mask=..., **batch, labels=...)

(``Qwen2_5OmniProcessor`` would do the same but needs torchvision, which does not load here.)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from models.tokenizer import encode

SAMPLE_RATE = 16000
N_MELS = 128
HOP = 160  # Whisper: 10 ms mel frames at 16 kHz


@lru_cache(maxsize=1)
def feature_extractor():
    """Whisper log-mel extractor configured as Qwen2.5-Omni's (128 bins, 16 kHz)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=SAMPLE_RATE)


def log_mel(wave: np.ndarray, sr: int = SAMPLE_RATE):
    """Mono wave -> ``(input_features (128, L) float32 tensor, feature_attention_mask (L,) long)``.

    ``L = len(wave at 16 kHz) // 160``; nothing is padded, so the mask is all ones. Resamples when
    ``sr`` is not 16 kHz.
    """
    import torch

    from models.wave import resample

    w = resample(np.asarray(wave), sr, SAMPLE_RATE)
    if len(w) < 2 * HOP:
        raise ValueError(f"audio of {len(w)} samples at 16 kHz is too short: need at least {2 * HOP} (20 ms)")
    out = feature_extractor()(
        w, sampling_rate=SAMPLE_RATE, padding="longest", return_attention_mask=True, return_tensors="np"
    )
    feats = torch.from_numpy(out["input_features"][0]).float()  # (128, L)
    mask = torch.from_numpy(out["attention_mask"][0]).long()  # (L,)
    return feats, mask


def resampled_length(n_samples: int, sr: int, target_sr: int = SAMPLE_RATE) -> int:
    """Samples ``models.wave.resample`` returns for ``n_samples`` at ``sr`` (polyphase: ceil(n * up / down))."""
    from math import gcd

    if sr == target_sr:
        return n_samples
    g = gcd(int(sr), int(target_sr))
    up, down = target_sr // g, sr // g
    return -(-n_samples * up // down)


def mel_frames(n_samples: int, sr: int = SAMPLE_RATE) -> int:
    """Mel frames ``log_mel`` makes from a clip of ``n_samples`` at ``sr``, without computing them."""
    return resampled_length(n_samples, sr) // HOP


def n_audio_tokens(n_frames: int) -> int:
    """Number of audio embeddings the audio tower makes from ``n_frames`` mel frames (two stride-2 steps)."""
    return ((n_frames - 1) // 2 + 1 - 2) // 2 + 1


def audio_prompt(tokenizer, n_tokens: int) -> list[int]:
    """Chat prompt for a spoken question, ending where the assistant turn starts
    (the audio twin of ``models.tokenizer.text_prompt``)."""
    if n_tokens < 1:
        raise ValueError(f"an audio prompt needs at least one <|AUDIO|> token, got n_tokens={n_tokens}")
    return encode(
        tokenizer,
        "<|im_start|>user\n<|audio_bos|>"
        + "<|AUDIO|>" * n_tokens
        + "<|audio_eos|><|im_end|>\n<|im_start|>assistant\n",
    )


def audio_tower(model):
    """The thinker's audio encoder, from the full model or the thinker (transformers 5 keeps it at
    ``thinker.model.audio_tower``; older releases at ``thinker.audio_tower``). Its ``proj`` is the adapter."""
    thinker = getattr(model, "thinker", model)
    for owner in (getattr(thinker, "model", None), thinker):
        tower = getattr(owner, "audio_tower", None) if owner is not None else None
        if tower is not None:
            return tower
    raise AttributeError(f"{type(model).__name__} has no thinker audio tower; pass a Qwen2.5-Omni model or thinker")


def collate_features(features: Sequence) -> dict:
    """Pad ``(128, L_i)`` feature tensors to the longest clip.

    Returns ``{"input_features": (B, 128, Lmax) float, "feature_attention_mask": (B, Lmax) long}``,
    the keyword arguments ``model.thinker(...)`` takes for audio.
    """
    import torch

    if not features:
        raise ValueError("collate_features needs at least one feature tensor")
    for i, f in enumerate(features):
        if f.ndim != 2 or f.shape[0] != N_MELS:
            raise ValueError(f"features[{i}] has shape {tuple(f.shape)}, expected ({N_MELS}, L) from log_mel")
    lmax = max(f.shape[1] for f in features)
    x = torch.zeros(len(features), N_MELS, lmax, dtype=torch.float32)
    mask = torch.zeros(len(features), lmax, dtype=torch.long)
    for i, f in enumerate(features):
        x[i, :, : f.shape[1]] = torch.as_tensor(f, dtype=torch.float32)
        mask[i, : f.shape[1]] = 1
    return {"input_features": x, "feature_attention_mask": mask}

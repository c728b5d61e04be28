"""Audio input tests: features, prompt, collation, and a tiny thinker training on two clips.

    .venv/bin/python -m pytest tests/test_audio.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.audio import audio_prompt, audio_tower, collate_features, log_mel, n_audio_tokens
from models.omni import TinyDims, build_tiny
from models.tokenizer import encode, train_bpe

TEXTS = ["Tom has three apples and buys twelve more.", "The answer is fifteen.", "How many apples?"] * 20


def voiced(seconds: float, f0: float = 120.0, sr: int = 16000) -> np.ndarray:
    """A vowel-like harmonic signal with a syllable-rate envelope (stands in for speech)."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    return (0.3 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXTS, vocab_size=400)


def test_log_mel_variable_length():
    f, m = log_mel(voiced(1.23))
    assert f.shape == (128, 1.23 * 16000 // 160) and f.dtype == torch.float32
    assert m.shape == (f.shape[1],) and int(m.sum()) == f.shape[1]
    f2, _ = log_mel(voiced(1.23, sr=24000), sr=24000)  # resampled to 16 kHz first
    assert abs(f2.shape[1] - f.shape[1]) <= 1
    with pytest.raises(ValueError, match="too short"):
        log_mel(np.zeros(100, np.float32))


def test_n_audio_tokens_matches_audio_tower():
    model = build_tiny(TinyDims(), train_bpe(TEXTS, vocab_size=400))
    for n in (2, 3, 99, 100, 201, 437):
        _, out = audio_tower(model)._get_feat_extract_output_lengths(torch.tensor([n]))
        assert n_audio_tokens(n) == int(out)
    assert n_audio_tokens(100) == 25  # 1 s of audio -> 25 embeddings


def test_audio_prompt(tok):
    ids = audio_prompt(tok, 5)
    audio = tok.convert_tokens_to_ids("<|AUDIO|>")
    assert ids.count(audio) == 5
    assert tok.decode(ids) == (
        "<|im_start|>user\n<|audio_bos|>" + "<|AUDIO|>" * 5 + "<|audio_eos|><|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="at least one"):
        audio_prompt(tok, 0)


def test_collate_pads_to_longest():
    a, b = log_mel(voiced(0.5))[0], log_mel(voiced(0.8))[0]
    batch = collate_features([a, b])
    assert batch["input_features"].shape == (2, 128, b.shape[1])
    assert batch["feature_attention_mask"].sum(1).tolist() == [a.shape[1], b.shape[1]]
    assert torch.equal(batch["input_features"][0, :, : a.shape[1]], a)
    assert not batch["input_features"][0, :, a.shape[1] :].any()
    with pytest.raises(ValueError, match="expected \\(128, L\\)"):
        collate_features([a.T])


def test_tiny_thinker_trains_on_two_clips(tok):
    model = build_tiny(TinyDims(), tok)
    feats = [log_mel(voiced(s, f0))[0] for s, f0 in ((0.9, 110.0), (1.5, 180.0))]
    answers = ["The answer is fifteen.", "How many apples?"]
    rows, labels = [], []
    for f, a in zip(feats, answers):
        prompt = audio_prompt(tok, n_audio_tokens(f.shape[1]))
        target = encode(tok, a) + [tok.eos_token_id]
        rows.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    t = max(map(len, rows))
    pad = tok.pad_token_id
    input_ids = torch.tensor([r + [pad] * (t - len(r)) for r in rows])
    attention_mask = torch.tensor([[1] * len(r) + [0] * (t - len(r)) for r in rows])
    label_t = torch.tensor([lab + [-100] * (t - len(lab)) for lab in labels])
    out = model.thinker(
        input_ids=input_ids, attention_mask=attention_mask, labels=label_t, **collate_features(feats)
    )
    assert torch.isfinite(out.loss)
    out.loss.backward()
    proj = audio_tower(model.thinker).proj.weight.grad
    assert proj is not None and proj.abs().sum() > 0  # the adapter learns from the text loss

    # Padding one clip's features must not change the other's loss (the mask selects valid frames).
    model.zero_grad()
    with torch.no_grad():
        solo = model.thinker(
            input_ids=input_ids[:1, : len(rows[0])], labels=label_t[:1, : len(rows[0])], **collate_features(feats[:1])
        ).loss
        both = model.thinker(input_ids=input_ids, attention_mask=attention_mask, **collate_features(feats)).logits
        n0 = len(rows[0])
        lp = torch.nn.functional.cross_entropy(both[0, : n0 - 1], label_t[0, 1:n0], ignore_index=-100)
    assert torch.allclose(solo, lp, atol=1e-4)

"""Sizes of the tiny Qwen2.5-Omni the project builds from config (params.yaml ``model.tiny``).

Kept apart from models/omni.py so that reading params (tasks/core/params.py) does not pull in the
model code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TinyDims:
    """Sizes of the tiny model (params.yaml: ``model.tiny``)."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 4096
    audio_d_model: int = 64
    audio_layers: int = 2
    audio_heads: int = 2
    audio_ffn_dim: int = 128
    talker_hidden_size: int = 64
    talker_layers: int = 2
    talker_heads: int = 2
    talker_vocab_size: int = 1040  # codec tokens + the talker's 4 codec control ids at the top
    dit_hidden_size: int = 32
    dit_layers: int = 1

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.tiny.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"model.tiny.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("model.tiny.num_attention_heads must be a multiple of num_key_value_heads")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("model.tiny head_dim (hidden_size / num_attention_heads) must be even")
        if self.talker_vocab_size < 16:
            raise ValueError("model.tiny.talker_vocab_size must be at least 16")

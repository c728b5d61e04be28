"""The report's module groups in Qwen2.5-Omni terms, for the freeze table.

    audio_encoder  thinker audio tower minus its output projection
    adapter        the audio tower's output projection (audio -> LLM width)
    embedding      the LLM's token embeddings
    thinker_llm    decoder layers, final norm and lm_head
    talker         the talker (thinker states -> codec tokens)
    codec_decoder  token2wav (codec tokens -> waveform); never trained here
    vision         the vision tower; unused by this project, always frozen
"""

from __future__ import annotations

from typing import Iterable

GROUPS = ("audio_encoder", "adapter", "embedding", "thinker_llm", "talker", "codec_decoder", "vision")

# First matching prefix wins (names as in transformers 5 Qwen2_5OmniForConditionalGeneration).
_PREFIXES = [
    ("thinker.model.audio_tower.proj.", "adapter"),
    ("thinker.model.audio_tower.", "audio_encoder"),
    ("thinker.model.visual.", "vision"),
    ("thinker.model.language_model.embed_tokens.", "embedding"),
    ("thinker.model.language_model.", "thinker_llm"),
    ("thinker.lm_head.", "thinker_llm"),
    ("talker.", "talker"),
    ("token2wav.", "codec_decoder"),
]


def group_of(name: str) -> str:
    for prefix, group in _PREFIXES:
        if name.startswith(prefix):
            return group
    raise KeyError(f"parameter {name!r} belongs to no module group; update models/modules.py _PREFIXES")


def set_trainable(model, groups: Iterable[str]) -> dict[str, int]:
    """Freeze everything except ``groups``; returns trainable parameter counts per group."""
    groups = set(groups)
    unknown = groups - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown module groups {sorted(unknown)}; known: {list(GROUPS)}")
    counts = {g: 0 for g in groups}
    for name, p in model.named_parameters():
        g = group_of(name)
        p.requires_grad_(g in groups)
        if g in groups:
            counts[g] += p.numel()
    return counts

"""Tokenizer: a byte-level BPE trained locally, or a real checkpoint's tokenizer, plus our tokens.

Both paths end with the same special tokens: Qwen2.5-Omni's (audio, vision, chat markers, pad) and
the TiS control tokens. ``control_ids(tok)`` gives the ids the sequence format needs. The
``init_model`` stage trains the tiny tokenizer on generated problems (``python -m tasks.init_model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from models.format import ControlIds

# Qwen2.5-Omni's special tokens (names as in its tokenizer), in a fixed order so ids are stable.
QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
]
# Ours: switch to the spoken response stream, switch to the silent reasoning stream, and the pad that
# fills a slot of either stream.
SPEAK = "<|speak|>"
THINK = "<|think|>"
TIS_PAD = "<|tis_pad|>"
TIS_SPECIAL = [SPEAK, THINK, TIS_PAD]
EOS = "<|im_end|>"  # the response ends where a Qwen chat turn ends
PAD = "<|endoftext|>"  # batch padding (never trained on)
ALL_SPECIAL = QWEN_SPECIAL + TIS_SPECIAL


# Qwen2's pre-tokenizer pattern: every digit is its own pre-token (so ``49288`` is always the five
# tokens 4 9 2 8 8, as in Qwen2.5 — arithmetic is learnable digit by digit), words keep a leading space.
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def train_bpe(texts: Iterable[str], vocab_size: int = 2000):
    """Train a byte-level BPE on ``texts`` (Qwen2's pre-tokenization: single digits) and wrap it as a
    transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(ALL_SPECIAL) + 256 + 16:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for 256 byte symbols and {len(ALL_SPECIAL)} special "
            "tokens; use at least 300 (params.yaml: model.tokenizer_vocab_size)"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=ALL_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[t for t in ALL_SPECIAL if t not in (EOS, PAD)],
    )
    return fast


def add_tis_tokens(tokenizer) -> int:
    """Add the TiS (and any missing Qwen) special tokens to an existing tokenizer; returns #added."""
    missing = [t for t in ALL_SPECIAL if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if not missing:
        return 0
    return tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"no tokenizer at {p}; run the init_model stage first (`dvc repro init_model`)"
        )
    return AutoTokenizer.from_pretrained(str(p))


def control_ids(tokenizer) -> ControlIds:
    def one(t: str) -> int:
        i = tokenizer.convert_tokens_to_ids(t)
        if i is None or i == tokenizer.unk_token_id:
            raise KeyError(f"tokenizer lacks {t}; call models.tokenizer.add_tis_tokens first")
        return i

    return ControlIds(speak=one(SPEAK), think=one(THINK), pad=one(TIS_PAD), eos=one(EOS))


def special_ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in ALL_SPECIAL}


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def numbers_as_digits(text: str) -> str:
    """A text question's spoken numbers as digits, as an ASR's inverse text normalization writes them
    (text2num: "fifty-nine plus sixty-three" -> "59 plus 63", "twelve dollars and fifty cents" -> "12
    dollars and 50 cents"); digits and other words stay as they are. Every text question reaches the
    thinker through this (``text_prompt``), in training and at inference alike, so a transcript (numbers in
    words) and the written question (digits) are one input form and the model learns arithmetic on digits
    only (measured on one pipeline's thinker: README, "The question in the form it is asked")."""
    from text_to_num import alpha2digit

    return alpha2digit(text, "en", threshold=0) if text.strip() else text


def text_prompt(tokenizer, question: str, as_said: bool = False) -> list[int]:
    """Chat prompt for a text question (its numbers as digits: ``numbers_as_digits``), ending where the
    assistant turn starts. ``as_said``: the question's words as they are (training only: a text stand-in
    for a spoken question, whose reasoning then writes the words down and converts them, ``model.transcript``)."""
    q = question if as_said else numbers_as_digits(question)
    return encode(tokenizer, f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")


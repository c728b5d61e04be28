"""Qwen2.5-Omni: a tiny random model built from params.yaml, or a real checkpoint, with our tokens.

    model = build_tiny(TinyDims(), tokenizer)            # random init, seconds on a CPU
    model = load_pretrained("path/or/hub-id", tokenizer) # real weights; embeddings resized for our tokens
    save(model, tokenizer, out_dir)                      # save_pretrained (safetensors) + spk_dict.pt
    model, tok = load_checkpoint(step_dir, dtype)        # a saved checkpoint (model/ + tokenizer/)

The thinker is the part the text stages train; the talker and token2wav come along so the same
checkpoint serves every stage.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from models.dims import TinyDims
from models.tokenizer import special_ids

log = logging.getLogger(__name__)


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) as Qwen does (sum must match)."""
    half = head_dim // 2
    t = half - 2 * (3 * half // 8)
    return [t, 3 * half // 8, 3 * half // 8]


def codec_ids(talker_vocab_size: int) -> dict[str, int]:
    """The talker's codec control ids, at the top of its vocabulary (codec tokens are below)."""
    v = talker_vocab_size
    return {
        "tts_codec_pad_token_id": v - 4,
        "tts_codec_start_token_id": v - 3,
        "tts_codec_end_token_id": v - 2,
        "tts_codec_mask_token_id": v - 1,
    }


def tiny_config(dims: TinyDims, tokenizer):
    """A full Qwen2_5OmniConfig (thinker + talker + token2wav) sized by ``dims``, ids from ``tokenizer``."""
    from transformers import Qwen2_5OmniConfig

    sp = special_ids(tokenizer)
    vocab = len(tokenizer)
    head_dim = dims.hidden_size // dims.num_attention_heads
    talker_head_dim = dims.talker_hidden_size // dims.talker_heads
    text_config = dict(
        vocab_size=vocab,
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_hidden_layers,
        num_attention_heads=dims.num_attention_heads,
        num_key_value_heads=dims.num_key_value_heads,
        max_position_embeddings=dims.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section(head_dim)},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    audio_config = dict(
        num_mel_bins=128,
        encoder_layers=dims.audio_layers,
        encoder_attention_heads=dims.audio_heads,
        encoder_ffn_dim=dims.audio_ffn_dim,
        d_model=dims.audio_d_model,
        output_dim=dims.hidden_size,
        max_source_positions=1500,
        n_window=100,
    )
    vision_config = dict(
        depth=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=dims.hidden_size,
        fullatt_block_indexes=[0],
    )
    thinker_config = dict(
        text_config=text_config,
        audio_config=audio_config,
        vision_config=vision_config,
        audio_token_index=sp["<|AUDIO|>"],
        image_token_index=sp["<|IMAGE|>"],
        video_token_index=sp["<|VIDEO|>"],
        audio_start_token_id=sp["<|audio_bos|>"],
        audio_end_token_id=sp["<|audio_eos|>"],
        vision_start_token_id=sp["<|vision_bos|>"],
        vision_end_token_id=sp["<|vision_eos|>"],
        user_token_id=tokenizer.convert_tokens_to_ids("user") or sp["<|im_start|>"],
    )
    talker_config = dict(
        vocab_size=dims.talker_vocab_size,
        embedding_size=dims.hidden_size,
        hidden_size=dims.talker_hidden_size,
        intermediate_size=dims.talker_hidden_size * 2,
        num_hidden_layers=dims.talker_layers,
        num_attention_heads=dims.talker_heads,
        num_key_value_heads=dims.talker_heads,
        head_dim=talker_head_dim,
        max_position_embeddings=dims.max_position_embeddings,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": mrope_section(talker_head_dim),
        },
        # Text-side ids of the talker live in the thinker vocabulary.
        tts_text_start_token_id=sp["<|speak|>"],
        tts_text_end_token_id=sp["<|im_end|>"],
        tts_text_pad_token_id=sp["<|tis_pad|>"],
        audio_token_index=sp["<|AUDIO|>"],
        image_token_index=sp["<|IMAGE|>"],
        video_token_index=sp["<|VIDEO|>"],
        audio_start_token_id=sp["<|audio_bos|>"],
        audio_end_token_id=sp["<|audio_eos|>"],
        vision_start_token_id=sp["<|vision_bos|>"],
        vision_end_token_id=sp["<|vision_eos|>"],
        **codec_ids(dims.talker_vocab_size),
    )
    token2wav_config = dict(
        dit_config=dict(
            hidden_size=dims.dit_hidden_size,
            num_hidden_layers=dims.dit_layers,
            num_attention_heads=2,
            ff_mult=2,
            emb_dim=dims.dit_hidden_size,
            head_dim=dims.dit_hidden_size // 2,
            look_ahead_layers=[0],
            look_backward_layers=[0],
            num_embeds=dims.talker_vocab_size,
            mel_dim=80,
            enc_emb_dim=32,
            enc_dim=32,
            enc_channels=[32, 32, 32, 32, 96],
            enc_attention_channels=16,
            enc_se_channels=16,
        ),
        bigvgan_config=dict(
            mel_dim=80,
            upsample_initial_channel=64,
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3, 5]],
            upsample_rates=[5, 3, 2, 2, 2, 2],
            upsample_kernel_sizes=[11, 7, 4, 4, 4, 4],
        ),
    )
    return Qwen2_5OmniConfig(
        thinker_config=thinker_config,
        talker_config=talker_config,
        token2wav_config=token2wav_config,
        enable_audio_output=True,
    )


def quiet_transformers() -> None:
    # Talker config validation warns that thinker-vocab ids exceed the codec vocab: by design.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def build_tiny(dims: TinyDims, tokenizer, seed: int = 0):
    """A random-init Qwen2_5OmniForConditionalGeneration sized by ``dims``."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    quiet_transformers()
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(tiny_config(dims, tokenizer))
    model.speaker_map = {"default": default_speaker(model, tokenizer)}
    return model


def default_speaker(model, tokenizer) -> dict:
    """Speaker conditioning for token2wav (a real checkpoint ships these in spk_dict.pt)."""
    import torch

    dit = model.config.token2wav_config.dit_config
    return {
        # Qwen's generate() reads bos_token as a thinker-vocabulary id (the talker's text start).
        "bos_token": tokenizer.convert_tokens_to_ids("<|speak|>"),
        "cond": torch.zeros(1, dit.enc_emb_dim),  # (1, enc_emb_dim) speaker x-vector
        "ref_mel": torch.zeros(1, 30, dit.mel_dim),  # (1, T, mel_dim) reference mel
    }


def resize_for_tokenizer(model, tokenizer) -> None:
    """Grow the thinker's embeddings and lm_head to the tokenizer (new rows: mean of the old ones)."""
    old = model.thinker.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        model.thinker.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        model.config.thinker_config.text_config.vocab_size = len(tokenizer)
        log.info("resized thinker embeddings %d -> %d", old, len(tokenizer))


def load_pretrained(source: str, tokenizer, dtype: str = "auto", local_files_only: bool | None = None):
    """Load a Qwen2.5-Omni checkpoint from a local directory or a hub id and fit it to ``tokenizer``.

    A hub id needs a network (or the hub cache); with ``HF_HUB_OFFLINE=1`` only the cache is used.
    """
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    quiet_transformers()
    p = Path(source).expanduser()
    is_local = p.exists()
    if not is_local and (os.sep in source and source.startswith((".", "/", "~"))):
        raise FileNotFoundError(f"model.source={source!r} is a path that does not exist")
    if local_files_only is None:
        local_files_only = is_local or os.environ.get("HF_HUB_OFFLINE") == "1"
    torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(
        str(p) if is_local else source, dtype=torch_dtype, local_files_only=local_files_only, use_kernels=False
    )
    resize_for_tokenizer(model, tokenizer)
    sp = special_ids(tokenizer)
    tc = model.config.talker_config
    tc.tts_text_start_token_id = sp["<|speak|>"]
    tc.tts_text_pad_token_id = sp["<|tis_pad|>"]
    return model


def load_checkpoint(ckpt_dir: str | Path, dtype=None):
    """(model, tokenizer) of a checkpoint directory: ``model/`` (save_pretrained + spk_dict.pt) and
    ``tokenizer/``, as every stage, the trainer and the serving engine write and read them.
    ``dtype``: a torch dtype (default float32). A directory that is not a checkpoint is an error
    naming what it lacks."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    from models.tokenizer import load_tokenizer

    d = Path(ckpt_dir)
    if not (d / "model" / "config.json").exists() or not (d / "tokenizer").is_dir():
        raise FileNotFoundError(
            f"{d} is not a model checkpoint: it needs model/ (save_pretrained) and tokenizer/; pass a training "
            "stage's step directory, e.g. checkpoints/talker/tis/step-00000080"
        )
    quiet_transformers()
    # use_kernels=False: transformers 5 otherwise swaps layers for hub kernels on CUDA, fetching them from the
    # hub at the first model.train()/eval() -- a crash offline ("could not verify publisher trust status").
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(str(d / "model"), dtype=dtype or torch.float32,
                                                                use_kernels=False)
    spk = d / "model" / "spk_dict.pt"
    if spk.exists():  # token2wav's speakers: saved by save(), not restored by from_pretrained
        model.load_speakers(str(spk))
    from models.streams import attach

    attach(model)  # the thinker's stream markers, when its config names them
    return model, load_tokenizer(d / "tokenizer")


def save(model, out_dir: str | Path) -> None:
    """save_pretrained (safetensors) plus spk_dict.pt, which from_pretrained of the full model needs."""
    import torch

    out = Path(out_dir)
    model.save_pretrained(str(out), safe_serialization=True)
    torch.save(dict(model.speaker_map), out / "spk_dict.pt")


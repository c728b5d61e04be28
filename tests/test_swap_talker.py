"""bench/swap_talker.py: a finished thinker with a fresh talker of other sizes, loadable as a checkpoint."""

from __future__ import annotations

import torch


def test_swap_keeps_the_thinker_and_builds_the_talker_wider(tmp_path, tokenizer):
    from bench.swap_talker import swap_talker
    from models.omni import TinyDims, build_tiny, load_checkpoint, save

    tiny_model = build_tiny(TinyDims(), tokenizer)  # its own: the session's tiny_model is shared
    src = tmp_path / "acoustic_tis" / "step-00000007"
    tiny_model.config.talker_config.tis_pace = "duration"
    save(tiny_model, src / "model")
    tokenizer.save_pretrained(str(src / "tokenizer"))
    out = swap_talker(tmp_path / "acoustic_tis", tmp_path / "wide", hidden=128, heads=4, layers=2)
    assert out == tmp_path / "wide" / "step-00000007" and not list((tmp_path / "wide").glob("*.partial"))
    model, tok = load_checkpoint(out)
    assert len(tok) == len(tokenizer)
    cfg, old = model.config.talker_config, tiny_model.config.talker_config
    assert cfg.hidden_size == 128 and cfg.num_attention_heads == 4 and old.hidden_size == 64
    assert cfg.tis_pace == "duration" and cfg.tts_codec_end_token_id == old.tts_codec_end_token_id
    old_thinker = tiny_model.thinker.state_dict()
    assert all(torch.equal(v, old_thinker[k]) for k, v in model.thinker.state_dict().items())
    assert sum(x.numel() for x in model.talker.parameters()) > 2 * sum(x.numel() for x in tiny_model.talker.parameters())

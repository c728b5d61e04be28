"""Trainer behaviour on the tiny model: inputs, resume after a kill, reload and generation.

    .venv/bin/python -m pytest tests/test_trainer.py -q
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tasks.core import checkpoint as ck
from tasks.core.params import StageParams
from tasks.core.stages import spec


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


def test_mixed_input_is_a_seeded_share():
    from tasks.core.trainer import audio_mask

    rows = [{}] * 2000
    m = audio_mask(rows, "mixed", 0.3, seed=0)
    assert abs(1 - sum(m) / len(m) - 0.3) < 0.04
    assert m == audio_mask(rows, "mixed", 0.3, seed=0) and m != audio_mask(rows, "mixed", 0.3, seed=1)
    assert all(audio_mask(rows[:5], "audio", 0.3, 0)) and not any(audio_mask(rows[:5], "text", 0.3, 0))


def test_examples_and_collate(tiny):
    from models.audio import n_audio_tokens
    from models.format import Role
    from tasks.core.dataset import load_samples
    from tasks.core.trainer import IGNORE, collate, make_examples, speech_codes

    rows = load_samples(tiny.data, "train")[:4]
    audio_id = tiny.tok.convert_tokens_to_ids("<|AUDIO|>")
    sp = StageParams(max_len=2048, text_fraction=0.5)
    ex, dropped = make_examples(rows, tiny.tok, tiny.p, spec("align"), sp, data_dir=tiny.data)
    assert len(ex) == 4 and not any(dropped.values())
    for e in ex:  # the prompt holds one placeholder per audio embedding; the target is the transcript + eos
        assert e.input_ids.count(audio_id) == n_audio_tokens(e.features.shape[1])
        assert e.labels[-1] == tiny.tok.eos_token_id and e.roles[-1] == int(Role.RESPONSE)
    codes = speech_codes(rows, tiny.data, tiny.codec)
    text, _ = make_examples(rows[:1], tiny.tok, tiny.p, spec("text_tis"), sp, data_dir=tiny.data)
    assert text[0].features is None and audio_id not in text[0].input_ids
    b = collate([ex[1], text[0], ex[2]], tiny.tok.pad_token_id)
    assert b["input_features"].shape[0] == 2  # only audio samples bring features, in batch order
    assert b["feature_attention_mask"].sum(1).tolist() == [ex[1].features.shape[1], ex[2].features.shape[1]]
    assert (b["input_ids"] == audio_id).sum() == sum(n_audio_tokens(int(x)) for x in b["feature_attention_mask"].sum(1))
    ex, _ = make_examples(rows, tiny.tok, tiny.p, spec("talker"), sp, "tis", tiny.data, codes)
    b = collate(ex, tiny.tok.pad_token_id)
    assert [int((r != IGNORE).sum()) for r in b["codes"]] == [len(c) for c in codes]
    assert max(max(c) for c in codes) < 1024  # codec ids fit below the tiny talker's control ids


def test_resume_after_kill_reproduces_the_run(tiny, tmp_path):
    """Kill after step 3 (its checkpoint lost, a half-written one left): the rerun resumes at step 2
    and ends with the same loss history as an uninterrupted run."""
    import shutil

    from tasks.core.trainer import train

    sp = StageParams(steps=4, batch_size=2, lr=2e-3, warmup_steps=1, max_len=1024, text_fraction=0.5)
    a = train("pretrain", tiny.p, sp, tiny.data, tiny.init, tmp_path / "a")
    b_dir = tmp_path / "b"
    b1 = train("pretrain", tiny.p, sp, tiny.data, tiny.init, b_dir, stop_after=3)
    assert b1.steps == 3 and [s for s, _ in ck.step_dirs(b_dir)] == [2, 3]
    shutil.rmtree(b_dir / ck.step_name(3))  # the kill came before step 3 was saved ...
    (b_dir / f".{ck.step_name(4)}.tmp" / "model").mkdir(parents=True)  # ... while step 4 was half written
    b2 = train("pretrain", tiny.p, sp, tiny.data, tiny.init, b_dir)
    assert b2.resumed and b2.start_step == 2 and b2.steps == 4
    np.testing.assert_allclose([l for _, l in b2.history], [l for _, l in a.history], rtol=1e-4)
    assert [s for s, _ in b2.history] == [1, 2, 3, 4]
    assert b2.val_loss == pytest.approx(a.val_loss, rel=1e-4)
    assert not [x for x in b_dir.iterdir() if ".tmp" in x.name]


def test_changed_params_restart_instead_of_resuming(tiny, tmp_path):
    from tasks.core.trainer import train

    sp = StageParams(steps=1, batch_size=2, warmup_steps=0, max_len=1024)
    train("text_tis", tiny.p, sp, tiny.data, tiny.init, tmp_path / "o")
    res = train("text_tis", tiny.p, replace(sp, lr=5e-3), tiny.data, tiny.init, tmp_path / "o")
    assert not res.resumed and res.start_step == 0


def test_more_steps_continue_fewer_steps_start_over(tiny, tmp_path):
    """`dvc exp run -S <stage>.steps=N`: N above the checkpoint extends it, N below retrains to N."""
    from tasks.core.trainer import train

    sp = StageParams(steps=2, batch_size=2, warmup_steps=0, max_len=1024)
    train("text_tis", tiny.p, sp, tiny.data, tiny.init, tmp_path / "o")
    more = train("text_tis", tiny.p, replace(sp, steps=3), tiny.data, tiny.init, tmp_path / "o")
    assert more.resumed and more.start_step == 2 and more.steps == 3
    fewer = train("text_tis", tiny.p, replace(sp, steps=1), tiny.data, tiny.init, tmp_path / "o")
    assert not fewer.resumed and fewer.start_step == 0 and fewer.steps == 1
    assert [s for s, _ in ck.step_dirs(tmp_path / "o")] == [1]


def test_trained_checkpoint_reloads_and_speaks(tiny, tmp_path):
    """A talker checkpoint loads with from_pretrained; the thinker generates text from audio, and the
    talker's codes decode to a waveform through the codec."""
    from transformers import Qwen2_5OmniForConditionalGeneration

    from models.talker import generate_codes, thinker_states
    from tasks.codec import load_stage_codec
    from tasks.core.dataset import load_samples
    from tasks.core.trainer import collate, make_examples, train

    sp = StageParams(steps=2, batch_size=2, lr=2e-3, warmup_steps=0, max_len=1024)
    res = train("talker", tiny.p, sp, tiny.data, tiny.init, tmp_path / "talker", fmt="tis", codec_dir=tiny.codec)
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(str(res.checkpoint / "model"), dtype=torch.float32)
    model.load_speakers(str(res.checkpoint / "model" / "spk_dict.pt"))
    model.eval()
    row = load_samples(tiny.data, "validation")[:1]
    ex, _ = make_examples(row, tiny.tok, tiny.p, spec("talker"), sp, "tis", tiny.data)
    b = collate(ex, tiny.tok.pad_token_id)
    audio = {k: b[k] for k in ("input_features", "feature_attention_mask")}
    prompt_len = next(i for i, r in enumerate(ex[0].roles) if r != 0)
    out = model.thinker.generate(input_ids=b["input_ids"][:, :prompt_len], max_new_tokens=6, do_sample=False,
                                 **audio)
    assert out.shape[1] > prompt_len
    hidden, embeds = thinker_states(model, input_ids=b["input_ids"], attention_mask=b["attention_mask"], **audio)
    codec = load_stage_codec(tiny.codec)
    ids = generate_codes(model, hidden, embeds, b["roles"], max_new_tokens=40, codebook_sizes=codec.codebook_sizes,
                         do_sample=True, generator=torch.Generator().manual_seed(0))
    codes = codec.unflatten(ids, strict=False)
    wave = codec.decode(codes)
    assert len(codes) >= 1 and len(wave) == len(codes) * codec.hop and np.isfinite(wave).all()

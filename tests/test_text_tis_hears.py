"""``text_tis.spoken_fraction``: the text stage asks a share of its questions spoken, so the layout it teaches
(TiS or think-first) is also learned on what the ear gives, not only on text prompts.

- 0 (the old behaviour): text input, no example reads audio;
- above 0: ``mixed`` input with the same freeze table (embedding and LLM; the ear is never trained here);
  spoken examples read the spoken set's audio and their reasoning starts with the transcript
  (``model.transcribe_first``), text ones read the text pool;
- one real step trains the LLM groups and leaves the ear bit-identical.

    .venv/bin/python -m pytest tests/test_text_tis_hears.py -q
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pandas as pd
import pytest

from tasks.core import checkpoint as ck
from tasks.core.examples import StageData
from tasks.core.stages import EAR, for_params, spec
from test_stages import changed_groups, weights


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


@pytest.fixture()
def pooled(tiny, tmp_path):
    """The tiny dataset with a text pool: its training rows again, without any audio (a text example that
    reached for audio would fail)."""
    data = tmp_path / "data"
    shutil.copytree(tiny.data, data)
    pd.read_parquet(data / "train.parquet").assign(question_audio="", response_audio="").to_parquet(
        data / "text.parquet")
    return data


def _p(tiny, share, **kw):
    return replace(tiny.p, text_tis=replace(tiny.p.text_tis, spoken_fraction=share, text_pool=True, max_len=4096,
                                            **kw))


def test_a_spoken_share_mixes_spoken_and_text_questions(tiny, pooled):
    from models.tokenizer import numbers_as_digits

    assert tiny.p.model.transcribe_first
    off = for_params("text_tis", _p(tiny, 0.0))
    assert off.input == "text"
    data = StageData(pooled, "train", tiny.tok, _p(tiny, 0.0), off, _p(tiny, 0.0).text_tis, "tis")
    assert all(data.example(i).audio is None for i in range(len(data)))

    p = _p(tiny, 0.5)
    on = for_params("text_tis", p)
    assert on.input == "mixed" and on.trainable == off.trainable and not on.trainable & EAR
    data = StageData(pooled, "train", tiny.tok, p, on, p.text_tis, "tis")
    spoken = pd.read_parquet(tiny.data / "train.parquet")
    heard = 0
    for i in range(len(data)):
        ex = data.example(i)
        assert not isinstance(ex, str), ex
        text = tiny.tok.decode(ex.input_ids)
        if ex.audio is None:
            continue
        heard += 1
        row = spoken.iloc[i % len(spoken)]
        assert ex.audio == pooled / row["question_audio"]
        # the reasoning writes what was heard, numbers as digits, before it reasons
        assert numbers_as_digits(row["spoken_question"]).split()[0] in text
    assert 0 < heard < len(data)


def test_a_spoken_share_trains_the_llm_and_leaves_the_ear(tiny, pooled, tmp_path):
    from tasks.core.trainer import train

    p = _p(tiny, 0.75)
    p = replace(p, trainer=replace(p.trainer, checkpoint_every=1, keep_checkpoints=1))
    sp = replace(p.text_tis, steps=1, batch_size=4, lr=1e-3, warmup_steps=0)
    data = StageData(pooled, "train", tiny.tok, p, for_params("text_tis", p), sp, "tis")
    assert any(data.example(i).audio is not None for i in range(4))
    res = train("text_tis", p, sp, pooled, tiny.init, tmp_path / "out", fmt="tis")
    assert res.steps == 1
    assert changed_groups(weights(ck.latest(tiny.init)), weights(ck.latest(tmp_path / "out"))) == {"embedding",
                                                                                                     "thinker_llm"}


def test_spoken_fraction_is_checked():
    from tasks.core.params import ParamsError, load_params

    assert load_params().text_tis.spoken_fraction >= 0.0
    for bad in (1.0, -0.1):
        with pytest.raises(ParamsError, match=r"text_tis.spoken_fraction must be in \[0, 1\)"):
            load_params(overrides={"text_tis": {"spoken_fraction": bad}})


def test_a_spoken_share_without_audio_says_what_to_set(tiny, pooled):
    """A dataset whose questions were never spoken (a text-only one) and a spoken share: the error names the setting."""
    table = pd.read_parquet(pooled / "train.parquet")
    table.assign(question_audio="").to_parquet(pooled / "train.parquet")
    p = _p(tiny, 0.5)
    data = StageData(pooled, "train", tiny.tok, p, for_params("text_tis", p), p.text_tis, "tis")
    with pytest.raises(ValueError, match=r"has no question_audio.*text_tis.spoken_fraction: 0"):
        for i in range(len(data)):
            data.example(i)

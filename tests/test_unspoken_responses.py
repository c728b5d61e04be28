"""``synthesize.sources[].speak_response: false``: a source whose questions are spoken and whose responses
are not (a drill for the ear at half the speech and none of the codec's work).

- its rows keep their spoken question and have no response speech; the other sources' rows have both;
- the talker trains only on rows with response speech (every example it builds has codec ids); a dataset
  with none says what to set.

    .venv/bin/python -m pytest tests/test_unspoken_responses.py -q
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pandas as pd
import pytest

from conftest import synth_params
from tasks.core.dataset import load_samples
from tasks.core.examples import StageData, rows_with_speech
from tasks.core.params import SourceSpec
from tasks.core.stages import spec
from test_synth_datasets import small_tokenizer
from test_synth_stage import P


def test_a_source_with_unspoken_responses_keeps_its_spoken_questions(tmp_path):
    from tasks import synthesize

    cfg = synth_params(sources=(SourceSpec("builtin", limit=4),
                                SourceSpec("builtin", limit=4, kinds=("short_digit",), speak_response=False)),
                       asr_fraction=0.0, validation_fraction=0.25)
    stats = synthesize.run(P(), cfg, out_dir=tmp_path / "s", tokenizer=small_tokenizer(), use_ray=False)
    rows = load_samples(tmp_path / "s", "train") + load_samples(tmp_path / "s", "validation")
    assert stats["kept"] == len(rows) == 8
    assert all(r["question_audio"] and (tmp_path / "s" / r["question_audio"]).exists() for r in rows)
    silent = [r for r in rows if not r["response_audio"]]
    assert len(silent) == 4 and {r["kind"] for r in silent} == {"short_digit"}
    assert all(r["response_seconds"] == 0 and not r["response_starts"] for r in silent)
    spoken = [r for r in rows if r["response_audio"]]
    assert {r["kind"] for r in spoken} == {"short_digit", "long_digit", "single_step", "multi_step"}
    assert all((tmp_path / "s" / r["response_audio"]).exists() for r in spoken)
    assert stats["response_aligned"] == 4


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


def test_the_talker_trains_only_on_rows_with_response_speech(tiny, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny.data, data)
    table = pd.read_parquet(data / "train.parquet")
    mute = [0, 2, 5]
    table.loc[mute, "response_audio"] = ""
    table.to_parquet(data / "train.parquet")
    sp = replace(tiny.p.talker, max_len=4096)
    talker = StageData(data, "train", tiny.tok, tiny.p, spec("talker"), sp, "tis", codec_dir=tiny.codec)
    assert len(talker) == len(table) - len(mute)
    for i in range(len(talker)):
        ex = talker.example(i)
        assert not isinstance(ex, str), ex
        assert ex.codes  # every example the talker learns from has its speech's codec ids
    # the stages that only hear the question read every row
    align = StageData(data, "train", tiny.tok, tiny.p, spec("align"), replace(tiny.p.align, max_len=4096), "tis")
    assert len(align) == len(table)


def test_no_response_speech_says_what_to_set(tmp_path):
    table = tmp_path / "train.parquet"
    pd.DataFrame({"response_audio": ["", ""]}).to_parquet(table)
    with pytest.raises(ValueError, match=r"talker: none of the rows .* speak_response: true"):
        rows_with_speech(table, None, "talker", "train")
    assert rows_with_speech(table, None, "talker", "validation") == []
    pd.DataFrame({"response_audio": ["a.flac", "", "c.flac"]}).to_parquet(table)
    assert rows_with_speech(table, None, "talker", "train") == [0, 2]
    assert rows_with_speech(table, [1, 2], "talker", "train") == [2]
    pd.DataFrame({"response_audio": ["a.flac"]}).to_parquet(table)
    assert rows_with_speech(table, None, "talker", "train") is None

"""The `synthesize` stage end to end: output contract, real speech files, stats; Ray and in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import synth_params
import soundfile as sf

from tasks.core.dataset import COLUMNS, hf_dataset, load_samples
from tasks.core.params import SourceSpec
from tasks.synth.verbalize import speakable
from test_synth_datasets import DATA, small_tokenizer


class P:
    """The slice of Params the stage reads besides its own block (schedule)."""

    from models.format import Schedule

    schedule = Schedule(2, 8)


def check_output(out: Path, stats: dict) -> list[dict]:
    assert (out / "stats.json").exists() and json.loads((out / "stats.json").read_text()) == stats
    ds = hf_dataset(out)
    assert set(ds) == {"train", "validation"}
    assert set(COLUMNS) <= set(ds["train"].column_names)
    rows = load_samples(out, "train") + load_samples(out, "validation")
    assert len(rows) == stats["kept"] == stats["train"] + stats["validation"]
    # a reader that needs one column reads only it, the same values; a column the data lacks is named
    assert load_samples(out, "train", ["response"]) == [{"response": r["response"]} for r in rows[:stats["train"]]]
    with pytest.raises(ValueError, match=r"no column\(s\) \['nope'\].*dvc repro"):
        load_samples(out, "train", ["response", "nope"])
    for r in rows:
        assert r["response"].endswith(f"The answer is {r['answer']}.")
        for col, sec in (("question_audio", "question_seconds"), ("response_audio", "response_seconds")):
            wav, sr = sf.read(out / r[col], dtype="float32")
            assert sr == 16000 and wav.ndim == 1
            assert abs(len(wav) / sr - r[sec]) < 0.01
            assert np.sqrt(np.mean(wav**2)) > 0.01  # not silent
            said = r["spoken_question"] if col == "question_audio" else speakable(r["response"])
            assert 0.12 < len(wav) / sr / len(said.split()) < 1.0
        # when each response token is said (espeak's word times): the talker's training alignment
        starts = r["response_starts"]
        assert len(starts) == len(r["response_ids"]) and starts == sorted(starts)
        assert 0 <= starts[0] < 0.2 and starts[-1] < r["response_seconds"]
    assert stats["response_aligned"] == stats["kept"]
    return rows


def test_text_pool_is_verified_text_only_and_apart_from_the_spoken_set(tmp_path):
    """synthesize.text_pool: more built-in problems through the same checks, no audio, written as
    text.parquet; no pool question is a spoken-set (train or validation) question."""
    import pyarrow.parquet as pq

    from tasks import synthesize

    cfg = synth_params(sources=(SourceSpec("builtin", limit=8),), asr_fraction=0.0, validation_fraction=0.25,
                       text_pool=40)
    stats = synthesize.run(P(), cfg, out_dir=tmp_path / "synth", tokenizer=small_tokenizer(), use_ray=False)
    pool = pq.read_table(tmp_path / "synth" / "text.parquet").to_pylist()
    assert stats["text_pool"]["kept"] == len(pool) >= 30 and stats["text_pool"]["records"] <= 40
    spoken = {r["question"] for s in ("train", "validation") for r in load_samples(tmp_path / "synth", s)}
    assert not spoken & {r["question"] for r in pool} and len({r["question"] for r in pool}) == len(pool)
    assert all(r["question_audio"] == "" and r["response_audio"] == "" and r["reasoning_ids"] for r in pool)
    assert all(r["response"].endswith(f"The answer is {r['answer']}.") for r in pool)
    assert {r["kind"] for r in pool} == {"short_digit", "long_digit", "single_step", "multi_step"}
    assert not (tmp_path / "synth" / "audio").exists() or len(list((tmp_path / "synth" / "audio").iterdir())) == 16


def test_stage_in_process(tmp_path):
    """Every row spoken, ASR-checked and written; a rerun gives the same rows in the same split.

    libespeak-ng carries synthesis state across utterances (its pitch-flutter phase, wave phase and more
    live in process-wide statics no API resets), so the same text comes out a few samples different after a
    different history, and pocketsphinx's recall on one question moved 0.71 -> 0.93 between two runs in one
    process. The check's floor is therefore set below every row's recall here (lowest seen 0.2), so the rerun
    compares what the stage decides, not where a borderline row falls."""
    from tasks import synthesize

    cfg = synth_params(sources=(SourceSpec("builtin", limit=12),), asr_fraction=1.0, validation_fraction=0.25,
                       asr_min_recall=0.05)
    stats = synthesize.run(P(), cfg, out_dir=tmp_path / "synth", tokenizer=small_tokenizer(), use_ray=False)
    assert stats["records"] == 12 and stats["kept"] == 12 and stats["validation"] == 3
    assert stats["asr_checked"] == 12 and stats["asr_mean_recall"] > 0.3
    assert stats["audio_hours"] > 0 and 0 < stats["tts_rtf"] < 0.5
    rows = check_output(tmp_path / "synth", stats)
    assert len(rows) == 12
    # Reproducible: the same config gives the same samples in the same split.
    again = synthesize.run(P(), cfg, out_dir=tmp_path / "synth2", tokenizer=small_tokenizer(), use_ray=False)
    assert again["kept"] == stats["kept"]
    for split in ("train", "validation"):
        first, second = load_samples(tmp_path / "synth", split), load_samples(tmp_path / "synth2", split)
        assert [(r["id"], r["response"], r["response_ids"]) for r in first] == \
            [(r["id"], r["response"], r["response_ids"]) for r in second]


def test_stats_count_rejections_by_reason_and_source_with_examples(tmp_path):
    """stats.json tells reasons apart per source and keeps a few rejected examples per reason."""
    from tasks import synthesize

    recs = [
        {"question": "Tom has 3 bags of 168 marbles. How many marbles?", "answer": "#### 504"},  # answer only
        {"question": "Ann has 7 pens. How many pens?", "answer": "504"},  # answer only, no marker
        {"question": "What is (3 + 4 * 5? Ann has 3 pens and buys 4.", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "Ann has 3 pens and buys 4. How many pens?",
         "answer": "How many pens? ** She has 3 + 4 = <<3+4=7>>7 pens.\n#### 7"},  # socratic: kept
    ]
    f = tmp_path / "g.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = synth_params(sources=(SourceSpec("builtin", limit=4), SourceSpec("gsm8k", str(f))), asr_fraction=0.0)
    stats = synthesize.run(P(), cfg, out_dir=tmp_path / "s", tokenizer=small_tokenizer(), use_ray=False)
    assert stats["rejected"] == {"no_solution": 2, "unreadable_math": 1}
    assert stats["rejected_by_source"] == {"gsm8k": {"no_solution": 2, "unreadable_math": 1}}
    assert stats["kept_by_source"] == {"builtin": 4, "gsm8k": 1}
    ex = stats["rejected_examples"]
    assert [e["id"] for e in ex["no_solution"]] == ["gsm8k-0", "gsm8k-1"]
    assert ex["unreadable_math"][0]["detail"] == "unbalanced ()"
    assert ex["no_solution"][0]["question"].startswith("Tom has 3 bags")
    assert set(ex["no_solution"][0]) == set(synthesize.EXAMPLE_FIELDS)
    assert json.loads((tmp_path / "s" / "stats.json").read_text())["rejected_examples"] == ex


def test_voices_and_rates_vary_reproducibly():
    from tasks.synth.pipeline import voice_for

    cfg = synth_params()
    picks = [voice_for(cfg, f"builtin-2-{i}") for i in range(40)]
    assert picks == [voice_for(cfg, f"builtin-2-{i}") for i in range(40)]
    assert len({v for v, _, _ in picks}) >= 4 and len({r for _, r, _ in picks}) >= 10
    assert all(cfg.tts.rate_min <= r <= cfg.tts.rate_max for _, r, _ in picks)


def test_responses_are_said_in_the_models_one_voice_and_questions_in_drawn_ones(tmp_path, monkeypatch):
    """The talker learns one speaker: every response is said in ``synthesize.tts.response_voice`` while the
    questions keep their drawn voices; with ``response_voice: ""`` a response is said in its question's."""
    from models import tts
    from tasks import synthesize
    from tasks.evaluate.intelligibility import response_voice
    from tasks.synth import pipeline

    said: list[tuple[str, str, int, int]] = []
    real = tts.EspeakTTS.synthesize_timed

    def timed(self, text):  # the synthesize stage says responses with word times, questions without
        said.append(("response", self.voice, self.rate, self.pitch))
        return real(self, text)

    def plain(self, text):
        said.append(("question", self.voice, self.rate, self.pitch))
        return real(self, text)[:2]

    monkeypatch.setattr(tts.EspeakTTS, "synthesize_timed", timed)
    monkeypatch.setattr(tts.EspeakTTS, "synthesize", plain)
    for fixed in ("en-gb-x-rp", ""):
        pipeline._WORKER.clear()
        said.clear()
        cfg = synth_params(sources=(SourceSpec("builtin", limit=12),), asr_fraction=0.0,
                           tts=dict(response_voice=fixed, response_rate=160, response_pitch=40))
        out = tmp_path / (fixed or "drawn")
        stats = synthesize.run(P(), cfg, out_dir=out, tokenizer=small_tokenizer(), use_ray=False)
        rows = check_output(out, stats)
        questions = [v for w, *v in said if w == "question"]
        responses = [tuple(v) for w, *v in said if w == "response"]
        assert len(rows) >= 10 and len(responses) >= len(rows)
        assert len({v for v, _, _ in questions}) >= 3  # the questions' voices are drawn
        if fixed:
            assert set(responses) == {("en-gb-x-rp", 160, 40)}
            assert {r["response_voice"] for r in rows} == {"en-gb-x-rp@160wpm/p40"}
            assert {r["voice"] for r in rows} != {"en-gb-x-rp@160wpm/p40"}
        else:
            assert all(r["response_voice"] == r["voice"] for r in rows)
            assert len({r["response_voice"] for r in rows}) >= 3
    pipeline._WORKER.clear()
    # The evaluation's reference is said as the talker learned: the one voice, or espeak's default if mixed.
    assert response_voice(tmp_path / "en-gb-x-rp") == ("en-gb-x-rp", 160, 40)
    assert response_voice(tmp_path / "drawn") is None


def test_broken_tts_is_rejected_not_fatal(tmp_path, monkeypatch):
    from models import tts
    from tasks import synthesize
    from tasks.synth import pipeline

    calls = {"n": 0}
    real = tts.EspeakTTS.synthesize

    def flaky(self, text):
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            raise tts.TTSError("boom")
        if calls["n"] % 3 == 2:
            wav, sr = real(self, text)
            return np.zeros_like(wav), sr
        return real(self, text)

    monkeypatch.setattr(tts.EspeakTTS, "synthesize", flaky)
    pipeline._WORKER.clear()
    cfg = synth_params(sources=(SourceSpec("builtin", limit=9),), asr_fraction=0.0, tts=dict(speak_response=False))
    stats = synthesize.run(P(), cfg, out_dir=tmp_path / "s", tokenizer=small_tokenizer(), use_ray=False)
    pipeline._WORKER.clear()
    assert stats["rejected"] == {"tts_failed": 3, "silent_question_audio": 3}
    assert stats["kept"] == 3


@pytest.mark.integration
def test_stage_on_ray_with_real_sources(tmp_path):
    from tasks import synthesize

    sources = [SourceSpec("builtin", limit=16)]
    if (DATA / "svamp" / "SVAMP.json").exists():
        sources += [SourceSpec("svamp", str(DATA / "svamp" / "SVAMP.json"), limit=4),
                    SourceSpec("gsm8k", str(DATA / "gsm8k" / "test.jsonl"), limit=4)]
    cfg = synth_params(sources=tuple(sources), asr_fraction=0.25, ray=dict(num_cpus=2, shards=4, batch_size=4))
    stats = synthesize.run(P(), cfg, out_dir=tmp_path / "synth", tokenizer=small_tokenizer(), use_ray=True)
    assert stats["records"] == len(sources) * 4 + 12
    assert stats["kept"] + stats["rejected_total"] == stats["records"]
    assert stats["kept"] >= stats["records"] - 2
    rows = check_output(tmp_path / "synth", stats)
    assert {r["source"] for r in rows} == {s.kind for s in sources}


def test_rejected_rows_are_not_counted_as_aligned(tmp_path, monkeypatch):
    """``response_aligned`` counts kept rows only: a row the ASR check rejects after its response was
    spoken (and aligned) is not one."""
    from tasks import synthesize
    from tasks.synth import pipeline

    heard = iter([1.0, 0.0] * 3)

    class HalfDeaf:  # an ASR that hears every other spoken question: those fail the check
        def set_vocabulary(self, _words):
            pass

        def recall(self, _wav, _text):
            return next(heard), ""

    monkeypatch.setattr(pipeline, "_asr", HalfDeaf)
    cfg = synth_params(sources=(SourceSpec("builtin", limit=6),), asr_fraction=1.0, asr_min_recall=0.5)
    stats = synthesize.run(P(), cfg, out_dir=tmp_path / "s", tokenizer=small_tokenizer(), use_ray=False)
    assert stats["rejected"] == {"asr_mismatch": 3} and stats["kept"] == 3 and stats["response_aligned"] == 3

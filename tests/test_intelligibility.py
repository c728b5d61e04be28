"""The intelligibility chain (tasks/evaluate/intelligibility.py) on speech whose words are known: espeak
speaking a held-out response is heard (high recall, the heard answer is right); noise, silence and
another response's speech are not.

    .venv/bin/python -m pytest tests/test_intelligibility.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from models.asr import word_recall
from tasks.evaluate.intelligibility import Chain, group_metrics, heard_answer_text, spoken_text, summarize


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from models.codec import WorldCodec
    from models.tts import EspeakTTS
    from models.wave import resample
    from tasks.synth.builtin import generate_problems

    train = generate_problems(300, seed=11)
    tts = EspeakTTS()
    clips = [resample(*tts.synthesize(spoken_text(p.response)), 16000) for p in train[:12]]
    codec = WorldCodec.fit(clips, 16000, codebook_size=64, n_codebooks=3, iters=8, seed=0)
    return Chain.build([p.response for p in train], codec, tmp_path_factory.mktemp("asr"))


@pytest.fixture(scope="module")
def held_out():
    from tasks.synth.builtin import generate_problems

    return generate_problems(4, seed=99, kinds=("short_digit", "single_step"))


def speech(chain, problem) -> np.ndarray:
    return chain.reference(spoken_text(problem.response))[0]


def test_word_recall_counts_words_with_repeats():
    assert word_recall("the answer is thirty-one", "the answer is thirty one") == 1.0
    assert word_recall("thirty one thirty one", "thirty one") == 0.5  # repeats must be heard as often
    assert word_recall("the answer is five", "") == 0.0
    assert word_recall("the answer is five", "six seven") == 0.0
    assert heard_answer_text("the answer is thirty one") == "the answer is 31"


def test_known_speech_is_heard_and_its_answer_is_right(chain, held_out):
    for p in held_out:
        h = chain.hear(p.response, speech(chain, p), 16000, p.answer, p.kind)
        assert h["recall_reference"] >= 0.8, h
        assert h["recall_talker"] >= 0.8, h  # the "talker" here is the reference speech itself
        assert h["recall_resynthesis"] >= 0.5, h  # a small codec fitted on 12 clips still keeps words
        assert h["heard_correct"] and h["heard_extracted"] == p.answer, h
        assert h["audio_length_ratio"] == pytest.approx(1.0, abs=0.01) and h["talker_dbfs"] > -40


def test_noise_silence_and_other_speech_are_not_heard(chain, held_out):
    rng = np.random.default_rng(0)
    p, other = held_out[0], held_out[1]
    ref = speech(chain, p)
    noise = chain.hear(p.response, rng.normal(0, 0.1, len(ref)).astype(np.float32), 16000, p.answer, p.kind)
    silence = chain.hear(p.response, np.zeros(len(ref), np.float32), 16000, p.answer, p.kind)
    wrong = chain.hear(p.response, speech(chain, other), 16000, p.answer, p.kind)
    right = chain.hear(p.response, ref, 16000, p.answer, p.kind)
    assert noise["recall_talker"] <= 0.1 and not noise["heard_correct"], noise
    assert silence["recall_talker"] == 0.0 and not silence["heard_correct"] and silence["talker_dbfs"] == -120.0
    # Another response shares the template ("the answer is"), so some words match, far fewer than its own.
    assert wrong["recall_talker"] <= 0.6 * right["recall_talker"] and not wrong["heard_correct"], wrong
    # Nothing spoken at all: recall 0, not a missing number that averages away.
    none = chain.hear(p.response, None, 16000, p.answer, p.kind)
    assert none["recall_talker"] == 0.0 and none["talker_seconds"] == 0.0


def test_metrics_per_split_and_ratios(chain, held_out):
    rows = []
    for i, p in enumerate(held_out[:2]):
        wave = speech(chain, p) if i == 0 else np.zeros(16000, np.float32)
        rows.append({"split": p.kind, "sweep": False, "correct": True,
                     "heard": chain.hear(p.response, wave, 16000, p.answer, p.kind, audio_end="eos" if i == 0
                                         else "max_audio_seconds")})
    m = summarize(rows, [held_out[0].kind, held_out[1].kind])
    good, bad = held_out[0].kind, held_out[1].kind
    assert m[f"{good}/recall_talker"] >= 0.8 and m[f"{bad}/recall_talker"] == 0.0
    assert m[f"{good}/heard_accuracy"] == 1.0 and m[f"{bad}/heard_accuracy"] == 0.0
    assert m[f"{bad}/audio_capped"] == 1.0 and m[f"{good}/audio_capped"] == 0.0
    o = group_metrics(rows)
    assert o["heard_n"] == 2 and o["heard_written_accuracy"] == 1.0
    assert o["talker_vs_resynthesis"] == pytest.approx(o["recall_talker"] / o["recall_resynthesis"], abs=1e-3)


def test_compare_tabulates_what_is_heard():
    from tasks.compare import HEARD_COLUMNS, table

    m = {"tis": {"short_digit/n": 2, "short_digit/heard_n": 2, "short_digit/recall_talker": 0.5,
                 "short_digit/heard_accuracy": 0.5, "overall/n": 2, "overall/heard_n": 2, "overall/recall_talker": 0.5},
         "think_first": {"short_digit/n": 2, "overall/n": 2}}  # nothing spoken: no heard row
    t = table(m, ["short_digit"], HEARD_COLUMNS)
    col = t["columns"].index("talker")
    assert [r[:2] for r in t["rows"]] == [["short_digit", "TiS"], ["overall", "TiS"]]
    assert t["rows"][0][col] == 0.5 and t["rows"][0][t["columns"].index("heard accuracy %")] == 50.0

"""The ladder's spoken rungs: one voice, or the pipeline's drawn voices (bench/bench_ladder.py ``--voices``)."""

from __future__ import annotations

import pytest


def test_params_voices_are_drawn_per_problem_within_the_pipelines_ranges_and_reproducible():
    from bench.bench_ladder import ladder_tts
    from tasks.core.params import load_params

    t = load_params().synthesize.tts
    draw = ladder_tts("params", load_params().synthesize, seed=0)
    picked = [draw(i) for i in range(40)]
    settings = [(b.voice, b.rate, b.pitch) for b in picked]
    assert len({s[0] for s in settings}) >= 3, settings  # several voices, not one
    assert len(set(settings)) >= 20, settings  # rates and pitches vary too
    for voice, rate, pitch in settings:
        assert voice in t.voices and t.rate_min <= rate <= t.rate_max and t.pitch_min <= pitch <= t.pitch_max
    again = ladder_tts("params", load_params().synthesize, seed=0)
    assert [(b.voice, b.rate, b.pitch) for b in map(again, range(40))] == settings
    other = ladder_tts("params", load_params().synthesize, seed=1)
    assert [(b.voice, b.rate, b.pitch) for b in map(other, range(40))] != settings


def test_one_voice_and_a_clear_error_for_anything_else():
    from bench.bench_ladder import ladder_tts
    from tasks.core.params import load_params

    one = ladder_tts("one", load_params().synthesize, seed=0)
    assert (one.voice, one.rate, one.pitch) == ("en-us", 175, 50)
    with pytest.raises(SystemExit, match="'one' or 'params'"):
        ladder_tts("six", load_params().synthesize, seed=0)


def test_rows_speak_each_problem_in_its_drawn_voice(tmp_path):
    import soundfile as sf

    from bench.bench_ladder import ladder_tts, problems, rows
    from models.format import Schedule
    from tasks.core.params import load_params
    from tasks.init_model import build_tokenizer

    p = load_params()
    train, _ = problems("add", 4, 1, seed=0, trace_style="scratchpad")
    (tmp_path / "audio").mkdir()
    draw = ladder_tts("params", p.synthesize, seed=0)
    out = rows(train, build_tokenizer(p), Schedule(p.schedule.speak, p.schedule.think), draw, tmp_path, "train")
    for i, r in enumerate(out):
        wav, sr = sf.read(str(tmp_path / r["question_audio"]), dtype="float32")
        ref, ref_sr = draw(i).synthesize(r["spoken_question"])
        assert sr == ref_sr and abs(len(wav) - len(ref)) < 0.05 * len(ref)  # espeak drifts a few samples per call
        assert r["question_seconds"] == pytest.approx(len(wav) / sr)

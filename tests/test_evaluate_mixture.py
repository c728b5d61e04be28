"""Training the TiS stages on a mixture of speak:think ratios (``schedule.mix``), so one model serves
every ratio of the evaluation's sweep.

- the ratio is drawn per example and epoch from a seeded hash (the same on every rank and after a
  resume; a row meets other ratios in other epochs), uniformly over the mixture;
- the drift constraints are recomputed for the drawn ratio (``models.drift``): laid out with them no
  number is spoken before it is derived, while the stored 2:8 constraints would drift at 4:6;
- think-first examples, and TiS without a mixture, are exactly what they were;
- the mixture is part of a checkpoint's fingerprint (a run never resumes across a change of it).

    .venv/bin/python -m pytest tests/test_evaluate_mixture.py -q
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from models.drift import check_drift, tokenize_sample
from models.format import Schedule, build, deinterleave
from models.tokenizer import control_ids, text_prompt
from tasks.core.examples import BatchStream, StageData, heard_first, min_block_for, schedule_for
from tasks.core.params import ParamsError, load_params
from tasks.core.stages import spec

MIX = [[1, 9], [2, 8], [3, 7], [4, 6]]
SCHEDULES = tuple(Schedule(s, t) for s, t in MIX)


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


def _data(tiny, fmt="tis", mix=MIX, stage="text_tis"):
    p = load_params(overrides={"schedule": {"mix": mix}})
    sp = replace(p.stage(stage), max_len=4096)
    return StageData(tiny.data, "train", tiny.tok, p, spec(stage), sp, fmt, tiny.codec), p


def test_the_draw_is_seeded_uniform_and_changes_with_the_epoch():
    draws = [schedule_for(i, 0, SCHEDULES, seed=0) for i in range(4000)]
    assert draws == [schedule_for(i, 0, SCHEDULES, seed=0) for i in range(4000)]
    assert draws != [schedule_for(i, 0, SCHEDULES, seed=1) for i in range(4000)]
    counts = Counter(draws)
    assert set(counts) == set(SCHEDULES) and all(abs(c / 4000 - 0.25) < 0.03 for c in counts.values())
    # A row is not stuck with one ratio: over 8 epochs most rows meet several.
    assert sum(len({schedule_for(i, e, SCHEDULES, 0) for e in range(8)}) > 1 for i in range(200)) > 190
    assert {schedule_for(i, e, (Schedule(),), 0) for i in range(50) for e in range(3)} == {Schedule()}


def test_drift_constraints_follow_the_drawn_ratio(tokenizer):
    """Numbers derived in reasoning token j become speakable from block j // think + 1: the stored 2:8
    constraints are too early at 4:6 (drift), the recomputed ones never are."""
    from tasks.synth.builtin import generate_problems

    ids = control_ids(tokenizer)
    stale_drift = 0
    for pr in generate_problems(40, seed=5, kinds=("single_step", "multi_step", "long_digit")):
        stored = tokenize_sample(tokenizer, pr.question, pr.response, pr.reasoning, Schedule(2, 8))
        row = {"id": pr.id, "question": pr.question, "response": pr.response, "reasoning": pr.reasoning,
               **vars(stored)}
        prompt = text_prompt(tokenizer, pr.question)
        assert min_block_for(row, tokenizer, Schedule(2, 8)) == stored.min_block
        for sch in SCHEDULES:
            mb = min_block_for(row, tokenizer, sch)
            lay = build("tis", prompt, stored.response_ids, stored.reasoning_ids, ids, sch, min_block=mb, delay_eos=True)
            assert check_drift(lay, tokenizer, pr.question, ids, sch) == []
            split = deinterleave(lay.input_ids[lay.prompt_len:], ids, sch)
            assert (split.response, split.reasoning, split.ended) == (stored.response_ids, stored.reasoning_ids, True)
        lay = build("tis", prompt, stored.response_ids, stored.reasoning_ids, ids, Schedule(4, 6),
                    min_block=stored.min_block, delay_eos=True)
        stale_drift += bool(check_drift(lay, tokenizer, pr.question, ids, Schedule(4, 6)))
    assert stale_drift > 0  # so the recomputation above is needed, not a no-op


def test_a_changed_tokenizer_is_an_error_naming_the_fix(tokenizer):
    from tasks.synth.builtin import generate_problems

    pr = generate_problems(1, seed=3)[0]
    t = tokenize_sample(tokenizer, pr.question, pr.response, pr.reasoning, Schedule())
    row = {"id": "x", "question": pr.question, "response": pr.response, "reasoning": pr.reasoning, **vars(t)}
    row["response_ids"] = row["response_ids"][:-1]
    with pytest.raises(ValueError, match="rerun synthesize"):
        min_block_for(row, tokenizer, Schedule(1, 9))


@pytest.mark.parametrize("stage", ["text_tis", "talker"])
def test_tis_examples_train_at_the_drawn_ratio(tiny, stage):
    data, p = _data(tiny, stage=stage)
    ids = control_ids(tiny.tok)
    for epoch in range(3):
        for i in range(len(data)):
            e = data.example(i, epoch)
            sch = schedule_for(i, epoch, data.schedules, p.seed)
            row = {**data.rows[i], "min_block": min_block_for(data.rows[i], tiny.tok, sch)}
            if e.audio is not None and p.model.transcribe_first:  # the talker's spoken prompts
                row = heard_first(row, tiny.tok, sch.think, p.model.transcript)
            prompt_len = next(k for k, r in enumerate(e.roles) if r != 0)
            want = build("tis", e.input_ids[:prompt_len], row["response_ids"], row["reasoning_ids"], ids, sch,
                         min_block=row["min_block"], delay_eos=True)
            assert e.input_ids == want.input_ids and e.roles == [int(r) for r in want.roles]
            assert check_drift(want, tiny.tok, row["question"], ids, sch) == []
            assert (e.codes is not None) == (stage == "talker")
    assert set(data.drawn) == {tuple(m) for m in MIX}


def test_the_stream_draws_per_epoch(tiny):
    """BatchStream hands each row its epoch, so a row meets other ratios in later epochs."""
    data, _ = _data(tiny)
    calls = []
    build_example = data.example
    data.example = lambda i, epoch=0: (calls.append((i, epoch)), build_example(i, epoch))[1]
    stream = BatchStream(data, batch_size=3, seed=0)
    while stream.cursor < 3 * len(data):
        stream.next_batch()
    assert [e for _, e in calls] == [k // len(data) for k in range(len(calls))]
    for epoch in range(3):
        assert sorted(i for i, e in calls if e == epoch) == list(range(len(data)))
    ratios = {i: {schedule_for(i, e, data.schedules, 0) for j, e in calls if j == i} for i in range(len(data))}
    assert sum(len(r) > 1 for r in ratios.values()) >= len(data) // 2


def test_without_a_mixture_or_for_think_first_nothing_changes(tiny):
    plain, _ = _data(tiny, mix=[])
    assert plain.schedules == (Schedule(2, 8),)
    tf_mix, _ = _data(tiny, fmt="think_first")
    tf, _ = _data(tiny, fmt="think_first", mix=[])
    for i in range(len(plain)):
        row = plain.rows[i]
        e = plain.example(i, epoch=3)
        ids = control_ids(tiny.tok)
        prompt_len = next(k for k, r in enumerate(e.roles) if r != 0)
        stored = build("tis", e.input_ids[:prompt_len], row["response_ids"], row["reasoning_ids"], ids, Schedule(),
                       min_block=row["min_block"], delay_eos=True)
        assert e.input_ids == stored.input_ids
        assert tf_mix.example(i, epoch=3).input_ids == tf.example(i, epoch=3).input_ids
    assert set(tf_mix.drawn) == {(2, 8)}  # think-first has no ratio to draw


def test_the_mixture_is_in_the_checkpoint_fingerprint(tiny):
    from tasks.core.checkpoint import fingerprint

    s = spec("text_tis")
    fps = {}
    for mix in ([], MIX):
        p = load_params(overrides={"schedule": {"mix": mix}})
        fps[len(mix)] = fingerprint(p, s, p.text_tis, tiny.data, tiny.init, "tis")
    assert fps[0] != fps[len(MIX)]


@pytest.mark.parametrize("mix, match", [
    ([[0, 9]], r"schedule.mix holds \[speak, think\] pairs"),
    ([[2, 8], [2, 8]], "lists a ratio twice"),
    ([[2]], "schedule.mix"),
])
def test_bad_mixtures_name_the_key(mix, match):
    with pytest.raises(ParamsError, match=match):
        load_params(overrides={"schedule": {"mix": mix}})


@pytest.mark.parametrize("change, match", [
    ({"sweep": [[1, 0]]}, r"evaluate.sweep holds"),
    ({"limit_per_split": -1}, r"evaluate.limit_per_split must be >= 0"),
    ({"inputs": ["video"]}, r"evaluate.inputs"),
    ({"inputs": ["text", "text"]}, r"evaluate.inputs must list"),
    ({"inputs": []}, r"evaluate.inputs must list"),
    ({"splits": []}, r"evaluate.splits"),
    ({"max_new_tokens": 0}, r"evaluate.max_new_tokens"),
])
def test_bad_evaluate_params_name_the_key(change, match):
    with pytest.raises(ParamsError, match=match):
        load_params(overrides={"evaluate": change})

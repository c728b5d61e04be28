"""``model.transcribe_first``: with a spoken question the reasoning first writes what it heard.

- a spoken example's reasoning stream starts with the spoken question as text, numbers as digits, padded
  with spaces to whole think blocks, then holds the row's reasoning unchanged; its text examples and every
  example with the option off are exactly what they were;
- the reasoning after the transcript keeps its place in the think blocks (synthesis placed column facts
  at block starts) and no number is spoken before it is derived, at every ratio of a mixture;
- pretrain's solutions start with the transcript too; align's transcript target is untouched;
- ``model.transcript``: the transcript as digits, as said (words: what align learns to write), or both;
  with words or both, a text question asked in words keeps its words in the prompt and its reasoning
  writes the same transcript (the words -> digits step learned on text); evaluation's text prompt is
  unchanged (digits).

    .venv/bin/python -m pytest tests/test_transcribe_first.py -q
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from models.drift import check_drift
from models.format import Role, Schedule, build, deinterleave
from models.tokenizer import control_ids, encode, numbers_as_digits, text_prompt
from tasks.core.examples import StageData, heard_first, in_words, min_block_for, schedule_for
from tasks.core.params import load_params
from tasks.core.stages import spec

MIX = [[1, 9], [2, 8], [3, 7], [4, 6]]


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


def _data(tiny, stage="acoustic_tis", on=True, mix=(), fmt="tis", form="digits"):
    p = load_params(overrides={"model": {"transcribe_first": on, "transcript": form},
                               "schedule": {"mix": [list(m) for m in mix]}})
    sp = replace(p.stage(stage), max_len=4096)
    if hasattr(sp, "text_fraction"):
        sp = replace(sp, text_fraction=0.5)
    data = StageData(tiny.data, "train", tiny.tok, p, spec(stage), sp, fmt, tiny.codec)
    if form != "digits":  # the fixture's spoken questions are its digits; say them as synthesize does
        data.rows = SaidRows(data.rows)
    return data, p


class SaidRows:
    """Rows whose spoken question holds its numbers in words (``speakable``), as real synthesis writes it."""

    def __init__(self, rows):
        from tasks.synth.verbalize import speakable

        self.rows, self.say = rows, speakable

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        return {**row, "spoken_question": self.say(row["question"])}


def _prefix(tok, row, think, form="digits"):
    said, digits = row["spoken_question"].strip(), numbers_as_digits(row["spoken_question"]).strip()
    ids = encode(tok, {"digits": digits, "words": said, "both": f"{said} {digits}"}[form] + " ")
    return ids + encode(tok, " ") * (-len(ids) % think)


@pytest.mark.parametrize("mix,form", [((), "digits"), (MIX, "digits"), ((), "words"), (MIX, "both")])
def test_spoken_examples_reason_from_their_transcript(tiny, mix, form):
    data, p = _data(tiny, mix=mix, form=form)
    ids = control_ids(tiny.tok)
    spoken = text = as_said = 0
    for epoch in range(2):
        for i in range(len(data)):
            e = data.example(i, epoch)
            row = data.rows[i]
            sch = schedule_for(i, epoch, data.schedules, p.seed)
            prompt_len = next(k for k, r in enumerate(e.roles) if r != int(Role.PROMPT))
            lay = deinterleave(e.input_ids[prompt_len:], ids, sch)
            words = in_words(i, epoch, data.words_fraction, p.seed)
            if e.audio is None and (form == "digits" or not words):  # as text: the row's own reasoning
                text += 1
                assert e.input_ids[:prompt_len] == text_prompt(tiny.tok, row["question"])  # digits, as evaluated
                assert lay.reasoning == list(row["reasoning_ids"])
                continue
            if e.audio is None:  # asked in words (form words / both): written down as a spoken question is
                as_said += 1
                assert numbers_as_digits(row["spoken_question"]) != row["spoken_question"]  # it says numbers
                assert e.input_ids[:prompt_len] == text_prompt(tiny.tok, row["spoken_question"], as_said=True)
            else:
                spoken += 1
            pre = _prefix(tiny.tok, row, sch.think, form)
            assert len(pre) % sch.think == 0 and len(pre) > 0
            assert lay.reasoning == pre + list(row["reasoning_ids"])
            assert lay.response == list(row["response_ids"])
            # Laid out with the shifted constraints: nothing said before it is derived.
            want = build("tis", e.input_ids[:prompt_len], row["response_ids"], pre + list(row["reasoning_ids"]),
                         ids, sch, min_block=[b + len(pre) // sch.think if b else 0
                                              for b in min_block_for(row, tiny.tok, sch)], delay_eos=True)
            assert e.input_ids == want.input_ids
            assert check_drift(want, tiny.tok, row["question"], ids, sch) == []
    assert spoken > 10 and text > 5
    assert (as_said > 0) == (form != "digits")


def test_a_words_transcript_is_what_align_learns_to_write(tiny):
    """The words form is align's target, token for token (the hearing align trains is what pretrain asks
    for); both adds the question with digits after it; digits has no number word left."""
    row = {**tiny_row(tiny), "spoken_question": "What is seventy-three plus ninety-eight?"}
    align = encode(tiny.tok, row["spoken_question"])
    words = heard_first({**row, "min_block": [0]}, tiny.tok, 8, "words")
    assert words["reasoning_ids"][: len(align)] == align
    both = heard_first({**row, "min_block": [0]}, tiny.tok, 8, "both")
    text = both["reasoning"][: -len(row["reasoning"])]
    assert text.split() == (row["spoken_question"] + " " + numbers_as_digits(row["spoken_question"])).split()
    digits = heard_first({**row, "min_block": [0]}, tiny.tok, 8, "digits")
    assert digits["reasoning"].startswith("What is 73 plus 98? ")
    assert words["reasoning"].startswith("What is seventy-three plus ninety-eight? ")
    assert text.split() == "What is seventy-three plus ninety-eight? What is 73 plus 98?".split()
    with pytest.raises(ValueError, match="model.transcript"):
        heard_first({**row, "min_block": [0]}, tiny.tok, 8, "letters")


def test_the_reasoning_keeps_its_block_positions(tiny):
    """Reasoning token j of the row sits at offset j within its think block, with or without the
    transcript in front (so facts placed at block starts by synthesize.align_facts stay there)."""
    row = tiny_row(tiny)
    for think in (6, 7, 8, 9):
        out = heard_first({**row, "min_block": [0, 2, 2, 3]}, tiny.tok, think)
        k = len(out["reasoning_ids"]) - len(row["reasoning_ids"])
        assert k % think == 0
        assert out["reasoning_ids"][k:] == list(row["reasoning_ids"])
        assert out["min_block"] == [0, 2 + k // think, 2 + k // think, 3 + k // think]
        assert out["reasoning"].endswith(row["reasoning"])


def tiny_row(tiny):
    from tasks.core.dataset import load_samples

    return next(r for r in load_samples(tiny.data, "train") if r["spoken_question"])


def test_off_or_text_changes_nothing(tiny):
    on, _ = _data(tiny, on=True)
    off, _ = _data(tiny, on=False)
    for i in range(len(on)):
        a, b = on.example(i), off.example(i)
        assert (a.audio is None) == (b.audio is None)
        if a.audio is None:
            assert a.input_ids == b.input_ids
        else:
            assert a.input_ids != b.input_ids  # the transcript fills think slots (or adds blocks)


def test_pretrain_solutions_start_with_the_transcript_and_align_is_untouched(tiny):
    data, p = _data(tiny, stage="pretrain")
    plain, _ = _data(tiny, stage="pretrain", on=False)
    n = 0
    for i in range(len(data)):
        e, e0 = data.example(i), plain.example(i)
        if e.audio is None:
            assert e.input_ids == e0.input_ids
            continue
        n += 1
        start = next(k for k, r in enumerate(e.roles) if r != int(Role.PROMPT))
        row = data.spoken[i % len(data.spoken)] if data.spoken is not None else data.rows[i]
        pre = _prefix(tiny.tok, row, p.schedule.think)
        assert e.input_ids[start : start + len(pre)] == pre
        assert e.input_ids[start + len(pre) :] == e0.input_ids[start:]
    assert n > 0
    align_on, _ = _data(tiny, stage="align")
    align_off, _ = _data(tiny, stage="align", on=False)
    assert all(align_on.example(i).input_ids == align_off.example(i).input_ids for i in range(len(align_on)))


def test_a_tokenizer_that_splits_a_space_is_refused(tiny):
    class Split:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1, 2] if text == " " else [3] * len(text)}

    with pytest.raises(ValueError, match="transcribe_first"):
        heard_first({**tiny_row(tiny), "min_block": [0]}, Split(), 8)


def test_think_first_examples_lead_with_the_transcript_too(tiny):
    data, p = _data(tiny, fmt="think_first")
    for i in range(len(data)):
        e = data.example(i)
        if e.audio is not None:
            row = data.rows[i]
            start = next(k for k, r in enumerate(e.roles) if r != int(Role.PROMPT))
            pre = _prefix(tiny.tok, row, p.schedule.think)
            body = [t for t, r in zip(e.input_ids[start:], e.roles[start:]) if r == int(Role.REASONING)]
            assert body[: len(pre)] == pre
            return
    pytest.fail("no spoken example")


_ = Schedule  # the schedules above come from data.schedules


def test_text_tis_keeps_its_prompts_in_digits_whatever_the_transcript(tiny):
    """A text-only stage never hears: model.transcript words/both leaves its examples as they were
    (no question kept in words, no transcript, no extra tokens)."""
    both, _ = _data(tiny, stage="text_tis", form="both")
    digits, _ = _data(tiny, stage="text_tis", form="digits")
    for epoch in range(2):
        assert all(both.example(i, epoch).input_ids == digits.example(i, epoch).input_ids for i in range(len(both)))

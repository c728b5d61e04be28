"""bench/bench_stage.py's settings: --set overrides reach the params as dvc exp run -S would set them."""

from __future__ import annotations

import pytest

from bench.bench_stage import overrides
from tasks.core.params import load_params


def test_set_overrides_are_nested_yaml_values_that_params_validate():
    o = overrides(["acoustic_tis.text_fraction=0", "text_tis.steps=1500", "schedule.mix=[[1, 9], [2, 8]]",
                   "text_tis.lr=5e-3"])
    assert o == {"acoustic_tis": {"text_fraction": 0}, "text_tis": {"steps": 1500, "lr": 5e-3},
                 "schedule": {"mix": [[1, 9], [2, 8]]}}
    p = load_params(overrides=o)
    assert p.text_tis.steps == 1500 and p.acoustic_tis.text_fraction == 0.0 and p.schedule.mix == ((1, 9), (2, 8))
    for bad in ("text_tis.steps", "=3", "text_tis.steps=1=2x"):
        if "=" not in bad or bad.startswith("="):
            with pytest.raises(SystemExit, match="key.path=value"):
                overrides([bad])
    with pytest.raises(SystemExit, match="set to a value above"):
        overrides(["a=1", "a.b=2"])


def test_straddle_finds_column_facts_checks_them_and_splits_them_by_block(tokenizer):
    """bench/bench_straddle.py: the one-digit column facts of a scratchpad, right or wrong on the model's own
    digits (headers and partial sums are not facts), and whether a TiS block boundary cuts each."""
    from bench.bench_straddle import split_by_block
    from tasks.synth.blocks import column_facts as facts

    r = "46+86: 6+6=12 c1 =2|4+8+1=12 =122|122; 68-59: 8-9+10=9 b1 =9|6-1-5=0 =09|9; 5*9=45"
    found = [(r[a:b], ok) for a, b, ok in facts(r)]
    assert found == [("6+6=12", True), ("4+8+1=12", False), ("8-9+10=9", True), ("6-1-5=0", True), ("5*9=45", True)]
    assert [f[2] for f in facts("31+2790: 1+0=1 =1|554+4000: 4+0=5")] == [True, False]
    whole = split_by_block(tokenizer, r, think=10_000)  # one block: nothing is cut
    assert whole == {"cut": [0, 0], "uncut": [4, 5]}
    tiny = split_by_block(tokenizer, r, think=1)  # a block a token: every fact of 2+ tokens is cut
    assert tiny == {"cut": [4, 5], "uncut": [0, 0]}


def test_transcript_scores_count_each_said_word_once_and_numbers_in_order():
    """bench_stage --stage align: what the thinker heard of a spoken question, against what was said."""
    from bench.bench_stage import transcript_scores

    said = "Ana shares twenty-eight cards among two friends."
    assert transcript_scores([(said, said.upper())]) == {"word_recall": 100.0, "number_word_recall": 100.0,
                                                         "number_recall": 100.0, "numbers_exact": 100.0,
                                                         "numbers_heard": 100.0}
    # one number word wrong of three (one number of two); seven words of eight heard
    assert transcript_scores([(said, "Ana shares twenty-four cards among two friends")]) == {
        "word_recall": 87.5, "number_word_recall": 66.7, "number_recall": 50.0, "numbers_exact": 0.0,
        "numbers_heard": 0.0}
    # a word said once and heard five times counts once; numbers out of order are not exact
    got = transcript_scores([("two plus seven", "seven seven seven seven seven plus two")])
    assert got == {"word_recall": 100.0, "number_word_recall": 100.0, "number_recall": 100.0, "numbers_exact": 0.0,
                   "numbers_heard": 0.0}
    # a transcript with digits (model.transcript digits): no number words, its numbers read as digits; the numbers
    # of the first sentence count, not a scratchpad's after it
    got = transcript_scores([(said, "Ana shares 28 cards among 2 friends? 28/2: 2/2=1 r0|8/2=4 r0|14")])
    assert got["number_word_recall"] == 0.0 and got["number_recall"] == 100.0 and got["numbers_heard"] == 100.0
    got = transcript_scores([(said, "Ana shares 24 cards among 3 friends? 28/2: 2/2=1")])
    assert got["number_recall"] == 0.0 and got["numbers_heard"] == 0.0
    assert transcript_scores([(said, "")])["word_recall"] == 0.0
    assert transcript_scores([(said, said), ("three apples", "four apples")])["numbers_exact"] == 50.0


def test_scores_by_kind_keeps_each_kind_apart():
    """bench_stage --heard: the ear per kind of question (short arithmetic against word problems)."""
    import pytest

    from bench.bench_stage import scores_by_kind

    pairs = [("What is forty-six plus eighty-six?", "What is forty-six plus eighty-six?"),
             ("What is six times seven?", "What is six times seven?"),
             ("Ana shares twenty-eight cards among two friends.", "Mia shares ten cards among four friends.")]
    got = scores_by_kind(pairs, ["short_digit", "short_digit", "single_step"])
    assert set(got) == {"short_digit", "single_step"}
    assert got["short_digit"]["questions"] == 2 and got["short_digit"]["numbers_heard"] == 100.0
    assert got["single_step"]["questions"] == 1 and got["single_step"]["numbers_heard"] == 0.0
    assert scores_by_kind(pairs, ["", "", ""]) == {}  # rows without a kind count only overall
    with pytest.raises(ValueError, match="one kind per pair"):
        scores_by_kind(pairs, ["short_digit"])

"""``align.kinds``: the align stage trains on the spoken rows of some kinds of question only.

- with ``[short_digit]`` the stage's data is exactly the short-digit rows (its length, and each example's
  transcript target is one of theirs); ``[]`` keeps every row;
- a kind the generator does not make is a ParamsError naming the choices; kinds the dataset lacks fail
  with the kinds it has; a validation split without them only has no loss.

    .venv/bin/python -m pytest tests/test_align_kinds.py -q
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from models.losses import IGNORE
from tasks.core.examples import StageData, rows_of_kinds
from tasks.core.params import ParamsError, load_params
from tasks.core.stages import spec


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


def _align(tiny, kinds, split="train"):
    p = load_params(overrides={"align": {"kinds": list(kinds)}})
    sp = replace(p.align, max_len=4096)
    return StageData(tiny.data, split, tiny.tok, p, spec("align"), sp, "tis")


def test_align_reads_only_the_rows_of_its_kinds(tiny):
    rows = pd.read_parquet(tiny.data / "train.parquet")
    short = rows[rows.kind == "short_digit"]
    assert 0 < len(short) < len(rows)  # the fixture's mixture has other kinds too
    data = _align(tiny, ["short_digit"])
    assert len(data) == len(short)
    said = {q.strip() for q in short.spoken_question}
    for i in range(len(data)):
        ex = data.example(i)
        assert not isinstance(ex, str), ex
        assert ex.audio is not None  # align hears the question
        target = tiny.tok.decode([t for t in ex.labels if t != IGNORE], skip_special_tokens=True).strip()
        assert target in said, target
    assert len(_align(tiny, [])) == len(rows)
    two = _align(tiny, ["short_digit", "long_digit"])
    assert len(two) == int(rows.kind.isin(["short_digit", "long_digit"]).sum())


def test_unknown_or_missing_kinds_say_what_to_do(tiny, tmp_path):
    with pytest.raises(ParamsError, match=r"align.kinds: unknown kind\(s\) \['shorts'\]; choose from"):
        load_params(overrides={"align": {"kinds": ["shorts"]}})
    lone = tmp_path / "train.parquet"
    pd.DataFrame({"kind": ["multi_step", "single_step"], "question": ["a", "b"]}).to_parquet(lone)
    with pytest.raises(ValueError, match=r"none of the 2 rows .* \['multi_step', 'single_step'\]"):
        rows_of_kinds(lone, ("short_digit",), "align", "train")
    assert rows_of_kinds(lone, ("short_digit",), "align", "validation") == []
    assert rows_of_kinds(lone, ("single_step",), "align", "train") == [1]
    assert rows_of_kinds(lone, (), "align", "train") is None
    bare = tmp_path / "bare.parquet"
    pd.DataFrame({"question": ["a"]}).to_parquet(bare)
    with pytest.raises(ValueError, match="needs a `kind` column"):
        rows_of_kinds(bare, ("short_digit",), "align", "train")

"""Rewrite + interleave + verify on every record of the real GSM8K test set and SVAMP (no TTS).

Reads ../shared/data by path (never copied into the repository); skipped where it is absent.
"""

from __future__ import annotations

import collections
import json
import re

import pandas as pd
import pytest

from conftest import synth_params
from models.drift import check_drift, normalize_number
from models.format import Schedule, interleave
from models.tokenizer import control_ids, text_prompt
from tasks.core.params import SourceSpec
from tasks.synth.pipeline import Rules, process_batch
from tasks.synth.sources import collect
from tasks.synth.checks import response_problem
from tasks.synth.readback import mismatch
from tasks.synth.verbalize import speakable

from conftest import SHARED_DATA as DATA
from conftest import needs_shared_data

GSM8K_TEST = DATA / "gsm8k" / "test.jsonl"
SVAMP = DATA / "svamp" / "SVAMP.json"
pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def tok():
    return small_tokenizer()


@pytest.fixture(scope="module")
def processed(tok):
    cfg = synth_params(
        sources=(SourceSpec("gsm8k", str(GSM8K_TEST)), SourceSpec("svamp", str(SVAMP))),
        max_len=4096, max_question_words=400, max_response_words=80,
    )
    records, per_source, skipped = collect(cfg)
    assert per_source == {"gsm8k": 1319, "svamp": 1000}
    assert not any(skipped.values())
    out = process_batch(pd.DataFrame(records), Rules(cfg, tok, with_audio=False))
    return records, out


def truth_of(rec: dict) -> str:
    """The dataset's own answer, parsed independently of the code under test."""
    if "Answer" in rec:
        return normalize_number(repr(float(rec["Answer"])))
    return normalize_number(rec["answer"].split("####")[-1].strip())


def question_of(rec: dict) -> str:
    return rec["question"] if "question" in rec else f"{rec['Body']} {rec['Question']}"


def small_tokenizer():
    """A byte-level BPE trained in ~1 s on generated problems (as init_model does for the tiny model)."""
    from models.tokenizer import train_bpe
    from tasks.synth.builtin import generate_problems

    probs = generate_problems(800, seed=10_000)
    return train_bpe((t for q in probs for t in (q.question, q.reasoning, q.response)), 1000)


FORBIDDEN = re.compile(r"<<|[$%/=*\\{}^]|\d")


def test_every_spoken_question_reads_back_to_its_numbers(processed):
    """The value check on every record: the spoken question, read back by the words-to-number reader,
    states the question's values; the few that do not are never kept."""
    records, out = processed
    reject = dict(zip(out.idx, out.reject))
    lost = collections.Counter()
    for r in records:
        q = question_of(json.loads(r["record"]))
        spoken = speakable(q)
        assert spoken.strip(), q
        assert not FORBIDDEN.search(spoken), (q, spoken)
        assert "frac" not in spoken and "\\" not in spoken
        if mismatch(q, spoken):
            lost[r["source"]] += 1
            assert reject[r["idx"]] != "", (q, spoken, mismatch(q, spoken))
    assert lost["gsm8k"] <= 0.005 * 1319 and lost["svamp"] <= 0.005 * 1000, lost


def test_kept_samples_answer_right_and_do_not_drift(processed, tok):
    records, out = processed
    ids = control_ids(tok)
    schedule = Schedule()
    by_idx = {r["idx"]: json.loads(r["record"]) for r in records}
    kept = out[out.reject == ""]
    assert len(out) == len(records)
    for src, n in (("gsm8k", 1319), ("svamp", 1000)):
        assert (kept.id.str.startswith(src)).sum() >= 0.98 * n, collections.Counter(out[out.id.str.startswith(src)].reject)
    for row in kept.itertuples():
        truth = truth_of(by_idx[row.idx])
        m = re.search(r"The answer is (-?[\d.,]+)\.$", row.response)
        assert m and normalize_number(m.group(1)) == truth, (row.response, truth)
        assert not re.search(r"[$%/=*<>\\{}^#?]", row.response), row.response
        assert not FORBIDDEN.search(row.spoken_question), row.spoken_question
        # What is heard reads back to the numbers written, and holds no sub-question or markup reading.
        assert mismatch(row.question, row.spoken_question) == "", (row.question, row.spoken_question)
        assert row.spoken_response == speakable(row.response)
        assert mismatch(row.response, row.spoken_response) == "", (row.response, row.spoken_response)
        assert response_problem(row.response, row.spoken_response) is None, row.spoken_response
        lay = interleave(text_prompt(tok, row.question), list(row.response_ids), list(row.reasoning_ids), ids,
                         schedule, min_block=list(row.min_block), delay_eos=True)
        assert check_drift(lay, tok, row.question, ids, schedule) == [], row.response


def test_rejections_are_counted_with_reasons(processed):
    """Every rejection has a catalogued reason and a detail; none is an unexpected error."""
    from tasks.synth.checks import REASONS

    _, out = processed
    rejected = out[out.reject != ""]
    reasons = collections.Counter(rejected.reject)
    assert set(reasons) <= set(REASONS), reasons
    assert set(reasons) <= {"answer_not_derived", "equation_mismatch", "no_solution", "drift", "repeated_words",
                            "number_mismatch_question", "number_mismatch_response", "markup_in_response",
                            "question_in_response", "unreadable_math"}, reasons
    assert (rejected.detail != "").all() or set(rejected[rejected.detail == ""].reject) <= {"format"}

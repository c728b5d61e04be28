"""Rewrite + interleave + verify on every record of the real GSM8K test set and SVAMP (no TTS).

Reads ../shared/data by path (never copied into the repository); skipped where it is absent.
"""

from __future__ import annotations

import collections
import json
import re

import pandas as pd
import pytest
from num2words import num2words

from models.drift import check_drift, normalize_number
from models.format import Schedule, interleave
from models.tokenizer import control_ids, text_prompt
from tasks.synth.config import SourceSpec, SynthesizeParams
from tasks.synth.pipeline import Rules, process_batch
from tasks.synth.sources import collect
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
    cfg = SynthesizeParams(
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


DIGITS = "zero one two three four five six seven eight nine".split()


def spoken_forms(run: str, after_point: bool) -> list[str]:
    """Ways a digit run may be said: cardinal, ordinal, half/quarter denominators; after a decimal
    point, digit by digit or as cents ("$1.5" -> "one dollar and fifty cents")."""
    n = int(run)
    forms = [num2words(n), num2words(n, to="ordinal")]
    if n == 2:
        forms += ["half", "halves"]
    if n == 4:
        forms += ["quarter"]
    if after_point:
        forms += [" ".join(DIGITS[int(c)] for c in run), num2words(int((run + "0")[:2]))]
    return [f.replace(",", "").replace("-", " ") for f in forms]


def test_every_spoken_question_is_speakable_and_keeps_every_number(processed):
    records, _ = processed
    missing = []
    for r in records:
        q = question_of(json.loads(r["record"]))
        spoken = speakable(q)
        assert spoken.strip(), q
        assert not FORBIDDEN.search(spoken), (q, spoken)
        assert "frac" not in spoken and "\\" not in spoken
        said = " " + re.sub(r"[^a-z ]", " ", spoken.lower().replace("-", " ")) + " "
        said = re.sub(r"\s+", " ", said)
        plain = q.replace(",", "")
        for m in re.finditer(r"\d+", plain):
            run = m.group()
            if set(run) == {"0"} and (len(run) > 1 or plain[m.end() : m.end() + 1] == "."):
                continue  # "$3.00" -> "three dollars", "$0.50" -> "fifty cents": zeros rightly unsaid
            forms = spoken_forms(run, after_point=plain[m.start() - 1 : m.start()] == ".")
            if not any(f" {f} " in said or f" {f}s " in said for f in forms):
                missing.append((run, q, spoken))
    assert not missing, [(r, s) for r, _, s in missing[:8]]


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
        assert not re.search(r"[$%/=*<>\\{}^#]", row.response), row.response
        assert not FORBIDDEN.search(row.spoken_question), row.spoken_question
        lay = interleave(text_prompt(tok, row.question), list(row.response_ids), list(row.reasoning_ids), ids,
                         schedule, min_block=list(row.min_block), delay_eos=True)
        assert check_drift(lay, tok, row.question, ids, schedule) == [], row.response


def test_rejections_are_counted_with_reasons(processed):
    _, out = processed
    reasons = collections.Counter(out.reject[out.reject != ""])
    assert set(reasons) <= {"wrong_answer", "bad_equation", "drift", "too_long", "format"}, reasons

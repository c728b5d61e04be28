"""Collect: the built-in generator and the real loaders (on ../shared/data by path), bad records counted."""

from __future__ import annotations

import json

import pytest

from conftest import synth_params

from tasks.core.params import SourceSpec, SynthConfigError
from tasks.synth.solutions import Reject, decompose
from tasks.synth.sources import SourceError, collect

from conftest import SHARED_DATA as DATA
from conftest import needs_shared_data as needs_data


@needs_data
def test_real_loaders_read_every_record():
    cfg = synth_params(sources=(
        SourceSpec("gsm8k", str(DATA / "gsm8k" / "train.jsonl")),
        SourceSpec("gsm8k", str(DATA / "gsm8k" / "test.jsonl")),
        SourceSpec("svamp", str(DATA / "svamp" / "SVAMP.json"), limit=25),
        SourceSpec("builtin", limit=7),
    ))
    records, per_source, skipped = collect(cfg)
    assert per_source == {"gsm8k": 7473, "gsm8k1": 1319, "svamp": 25, "builtin": 7}
    assert not any(skipped.values())
    assert [r["idx"] for r in records] == list(range(len(records)))
    first = json.loads(records[0]["record"])
    assert first["answer"].rstrip().split("####")[-1].strip() == "72"
    svamp = [r for r in records if r["source"] == "svamp"]
    assert svamp[0]["id"] == "svamp-chal-1"
    s = decompose("svamp", svamp[0]["id"], json.loads(svamp[0]["record"]))
    assert s.answer == "51" and s.response.endswith("The answer is 51.")


def test_malformed_records_are_skipped_and_counted(tmp_path):
    good = {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3+4=<<3+4=7>>7\n#### 7"}
    lines = [json.dumps(good), "{not json", json.dumps({"question": "no answer field"}), "",
             json.dumps({"question": "Q?", "answer": "no final marker"}), json.dumps({"question": 5, "answer": "#### 5"})]
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    records, per_source, skipped = collect(synth_params(sources=(SourceSpec("gsm8k", str(f)),)))
    assert per_source["gsm8k"] == 3
    assert skipped["gsm8k"] == {"bad_json": 1, "missing_field": 1}
    reasons = []
    for r in records:
        try:
            decompose(r["source"], r["id"], json.loads(r["record"]))
        except Reject as e:
            reasons.append(e.reason)
    assert sorted(reasons) == ["missing_field", "no_final_answer"]


def test_parquet_and_directory_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"query": "What is $2+3$?", "response": "We have $2+3=5$. The answer is: 5", "type": "x"},
            {"query": "Half of 10?", "response": "10/2 = 5. The answer is: \\frac{1}{2}", "type": "x"}]
    (tmp_path / "d").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d" / "part.parquet")
    records, per_source, _ = collect(synth_params(sources=(SourceSpec("metamathqa", str(tmp_path / "d")),)))
    assert per_source == {"metamathqa": 2}
    s = decompose("metamathqa", "m0", json.loads(records[0]["record"]))
    assert s.answer == "5" and s.response.endswith("The answer is 5.") and "$" not in s.response
    with pytest.raises(Reject, match="non_numeric_answer"):
        decompose("metamathqa", "m1", json.loads(records[1]["record"]))


def test_orca_math_answer_is_the_last_number():
    s = decompose("orca_math", "o0", {"question": "A box has 4 rows of 6 eggs. How many eggs?",
                                      "answer": "There are 4 rows with 6 eggs each, so 4 * 6 = 24 eggs in total."})
    assert s.answer == "24" and s.response.endswith("The answer is 24.")


def test_missing_files_and_bad_settings_name_the_fix(tmp_path):
    with pytest.raises(SourceError, match="not found; fix synthesize.sources"):
        collect(synth_params(sources=(SourceSpec("gsm8k", str(tmp_path / "nope.jsonl")),)))
    with pytest.raises(SynthConfigError, match="limit"):
        synth_params(sources=[dict(kind="gsm8k", limit=-1)])
    with pytest.raises(SynthConfigError, match="validation_fraction"):
        synth_params(validation_fraction=1.5)
    with pytest.raises(SynthConfigError, match="piper_model"):
        synth_params(tts=dict(backend="piper"))


def test_synthesize_params_reject_unknown_keys():
    """The synthesize section is validated like every section: an unknown key is named."""
    from tasks.core.params import ParamsError, load_params

    with pytest.raises(ParamsError, match=r"synthesize\.tts\.speed: unknown key"):
        load_params(overrides={"synthesize": {"tts": {"speed": 2}}})
    with pytest.raises(ParamsError, match=r"synthesize\.sources\.0\.kind"):
        load_params(overrides={"synthesize": {"sources": [{"kind": "nope"}]}})



def test_a_builtin_source_makes_only_its_kinds():
    """A second builtin source of ``kinds: [short_digit]`` is a drill of short questions beside the mixture:
    only that kind, its own seed (ids distinct from the first source's); a kind the generator lacks, or
    ``kinds`` on a loader, is named with the fix."""
    cfg = synth_params(sources=[dict(kind="builtin", limit=8), dict(kind="builtin", kinds=["short_digit"], limit=6)])
    records, per_source, _ = collect(cfg)
    assert per_source == {"builtin": 8, "builtin1": 6}
    kinds = [json.loads(r["record"])["kind"] for r in records]
    assert kinds[:8] == ["short_digit", "long_digit", "single_step", "multi_step"] * 2
    assert kinds[8:] == ["short_digit"] * 6
    assert len({r["id"] for r in records}) == 14
    with pytest.raises(SynthConfigError, match=r"unknown kind\(s\) \['shortdigit'\].*short_digit"):
        synth_params(sources=[dict(kind="builtin", kinds=["shortdigit"])])
    with pytest.raises(SynthConfigError, match="builtin sources only"):
        synth_params(sources=[dict(kind="gsm8k", kinds=["short_digit"])])
    from tasks.core.params import BUILTIN_KINDS
    from tasks.synth.builtin import KINDS

    assert BUILTIN_KINDS == KINDS  # params checks the generator's own kinds

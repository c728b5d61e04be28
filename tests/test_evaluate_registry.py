"""The benchmark registry (tasks/evaluate/benchmarks/): a benchmark defined here, in the test, plugs in
with one ``register`` line and reaches the evaluate stage's items, jobs and scoring; the built-in ones
resolve from ``evaluate.benchmark``; formats are asked for properties, never compared by name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA, needs_shared_data
from models.format import CURSORS, FORMATS, FormatError, format_info
from tasks.core.params import load_params
from tasks.evaluate import benchmarks as B
from tasks.evaluate.benchmarks import BenchmarkError, Item, Request
from tasks.evaluate.metric import scorer

ROOT = Path(__file__).resolve().parents[1]


class Countdown:
    """A test-only benchmark: 'What is N minus one?' for N from the argument down, every split, scored
    by exact number (not AudioBench's leniency)."""

    name = "countdown"
    scoring = "exact_number"

    def items(self, request: Request) -> dict[str, list[Item]]:
        start = int(request.argument or 5)
        out = {}
        for split in request.splits:
            n = min(request.limit_per_split or start, start)
            out[split] = [Item(f"{split}-{k}", split, f"What is {start - k} minus one?", B.INSTRUCTION,
                               str(start - k - 1), np.zeros(1600, np.float32), 16000) for k in range(n)]
        return out


@pytest.fixture
def countdown(monkeypatch):
    monkeypatch.setitem(B.BENCHMARKS, "countdown", Countdown)  # what register() does, undone after the test
    B.register("countdown", Countdown)


def test_a_benchmark_defined_in_a_test_reaches_the_stage(countdown):
    from tasks.evaluate.decode import Job
    from tasks.evaluate.workflow import load_items, make_jobs

    p = load_params(overrides={"evaluate": {"benchmark": "countdown:9", "limit_per_split": 3, "sweep_per_split": 1}})
    items = load_items(p)
    assert list(items) == list(p.evaluate.splits)
    assert [it.transcript for it in items["short_digit"]] == ["What is 9 minus one?", "What is 8 minus one?",
                                                              "What is 7 minus one?"]
    assert all(it.scoring == "exact_number" for its in items.values() for it in its)
    jobs, sweep_ids = make_jobs(p, "tis", items)
    assert jobs and all(isinstance(j, Job) and j.scoring == "exact_number" for j in jobs)
    # think-first has no speak:think ratio: no sweep jobs, its main ratio empty.
    tf, _ = make_jobs(p, "think_first", items)
    asked = len(p.evaluate.inputs) * sum(len(v) for v in items.values())  # each question once per input
    assert len(tf) == asked and all(j.ratio == "" for j in tf)
    assert len(jobs) > len(tf) and {j.ratio for j in jobs} >= {"2:8"}


def test_scoring_is_the_benchmarks():
    lenient, exact = scorer("audiobench_math"), scorer("exact_number")
    assert lenient("Nine minus one is 8", "8", "short_digit") and not exact("Nine minus one is 8", "8", "short_digit")
    assert exact("Nine minus one. The answer is 8.", "8", "short_digit")
    assert not exact("The answer is 7.", "8", "short_digit")
    with pytest.raises(ValueError, match="unknown scoring"):
        scorer("bleu")


def test_resolve_names_and_errors(tmp_path):
    assert isinstance(B.resolve("proxy")[0], B.Proxy)
    assert B.resolve("gsm8k:/x/test.jsonl")[1] == "/x/test.jsonl"
    assert isinstance(B.resolve("amao0o0/spoken-mqa")[0], B.SpokenMQA)  # a bare hub id
    assert isinstance(B.resolve(str(tmp_path))[0], B.SpokenMQA)  # a bare path
    assert B.resolve("spoken_mqa:amao0o0/spoken-mqa")[1] == "amao0o0/spoken-mqa"
    with pytest.raises(BenchmarkError, match="unknown benchmark 'mathqa'.*registered: gsm8k, local, proxy"):
        B.resolve("mathqa:/data/x.json")
    with pytest.raises(TypeError, match="not a Benchmark"):
        B.register("broken", type("Broken", (), {"name": "broken"}))
    with pytest.raises(BenchmarkError, match="limit_per_split >= 1"):
        B.load("proxy", limit_per_split=0)
    with pytest.raises(BenchmarkError, match="needs a file"):
        B.load("gsm8k", ["gsm8k"])
    with pytest.raises(BenchmarkError, match="one split, 'svamp'"):
        B.load("svamp:/x.json", ["short_digit"])


def test_local_file_with_named_fields(tmp_path):
    f = tmp_path / "mine.jsonl"
    rows = [{"q": "Tom has 3 apples and buys 4. How many?", "gold": 7, "part": "easy", "key": "a1"},
            {"q": "A pen costs $2.50. What do 2 pens cost?", "gold": "5", "part": "easy", "key": "a2"},
            {"q": "What is 12 times 12?", "gold": "144", "part": "hard", "key": "b1"},
            {"q": "Skip me", "gold": "1", "part": "other", "key": "c"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = B.load(f"local:{f}?question=q&answer=gold&split=part&id=key", ["easy", "hard"], seed=1)
    assert {s: [it.id for it in v] for s, v in got.items()} == {"easy": ["easy-a1", "easy-a2"], "hard": ["hard-b1"]}
    it = got["easy"][1]
    assert it.answer == "5" and "two dollars and fifty cents" in it.transcript and it.seconds > 0.5
    assert not re.search(r"\d", it.transcript)
    one = B.load(f"local:{f}?question=q&answer=gold", ["all"], limit_per_split=1)
    assert [it.answer for it in one["all"]] == ["7"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "mine.parquet")
    assert B.load(f"local:{tmp_path / 'mine.parquet'}?question=q&answer=gold", ["x"])["x"][0].answer == "7"
    with pytest.raises(BenchmarkError, match="needs a text 'question'"):
        B.load(f"local:{f}", ["easy"])
    with pytest.raises(BenchmarkError, match="unknown or empty field option 'quest'"):
        B.load(f"local:{f}?quest=q", ["easy"])
    with pytest.raises(BenchmarkError, match="not found"):
        B.load(f"local:{tmp_path / 'none.jsonl'}?question=q&answer=gold", ["easy"])


@needs_shared_data
def test_gsm8k_and_svamp_through_the_registry():
    g = B.load(f"gsm8k:{SHARED_DATA / 'gsm8k' / 'test.jsonl'}", ["gsm8k"], limit_per_split=2)
    assert [it.answer for it in g["gsm8k"]] == ["18", "3"] and all(it.scoring == "audiobench_math" for it in g["gsm8k"])
    s = B.load(f"svamp:{SHARED_DATA / 'svamp' / 'SVAMP.json'}", ["svamp"], limit_per_split=1)
    assert len(s["svamp"]) == 1 and s["svamp"][0].seconds > 0.5


def test_every_format_has_properties_and_nothing_tests_the_name():
    assert set(FORMATS) == set(CURSORS)
    assert format_info("tis").interleaved and format_info("tis").ratio and format_info("tis").label == "TiS"
    assert not format_info("think_first").interleaved
    with pytest.raises(FormatError, match="unknown format 'cot'"):
        format_info("cot")
    offenders = []
    for f in [*ROOT.glob("tasks/**/*.py"), *ROOT.glob("flows/*.py"), *ROOT.glob("models/*.py")]:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if re.search(r"""[!=]=\s*["'](?:tis|think_first)["']|["'](?:tis|think_first)["']\s*[!=]=""", line):
                offenders.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "ask models.format.format_info(fmt) instead:\n" + "\n".join(offenders)


def test_decode_scores_with_the_jobs_scoring():
    """An answer the benchmark's strict rule rejects is wrong in the prediction row, though AudioBench's
    rule (the default) would count it."""
    from models.events import DoneEvent
    from tasks.evaluate.decode import Job, answer

    class Engine:
        def session(self, **_):
            return iter([DoneEvent(response="Nine minus one is 8", reasoning="9 - 1 = 8")])

    def job(scoring: str) -> Job:
        return Job(0, "short_digit-0", "short_digit", "What is 9 minus one?", "8", "tis", 2, 8, 16, 0.0, 0, False, 1.0,
                   False, scoring=scoring)

    assert answer(Engine(), job("audiobench_math"))[0]["correct"] is True
    assert answer(Engine(), job("exact_number"))[0]["correct"] is False

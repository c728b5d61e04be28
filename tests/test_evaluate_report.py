"""From prediction rows to metrics (tasks/evaluate/summary.py) and to the TiS vs think-first table
(tasks/compare.py), on rows written here by hand so every number is known.

    .venv/bin/python -m pytest tests/test_evaluate_report.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.compare import load_reports, markdown, run, sweep_rows, table
from tasks.core.params import load_params
from tasks.evaluate.decode import max_new_for
from tasks.evaluate.summary import group_metrics, summarize, sweep_table


def row(id="short_digit-0", split="short_digit", correct=True, extracted="5", words=4, eos=True, spoken=False,
        sweep=False, ratio="2:8", **t):
    timings = {"response_tokens": 6, "reasoning_tokens": 10, "thinker_positions": 60, "positions_to_first_text": 2,
               "seconds_to_first_text": 0.01, "positions_to_first_audio": None, "talker_steps_to_first_audio": None,
               "seconds_to_first_audio": None, "audio_gaps": None, "audio_seconds": None, "tokens_per_s": 1000.0,
               "positions_to_reasoning_end": 20, **t}
    return {"id": id, "split": split, "correct": correct, "extracted": extracted, "spoken_words": words,
            "finish_reason": "eos" if eos else "max_new_tokens", "error": "", "spoken": spoken, "sweep": sweep,
            "ratio": ratio, "timings": timings}


def test_group_metrics():
    rows = [row(words=4), row(correct=False, extracted=None, words=2, eos=False, positions_to_first_text=None,
                              seconds_to_first_text=None),
            row(spoken=True, words=6, tokens_per_s=200.0, positions_to_first_audio=11, seconds_to_first_audio=0.05,
                audio_gaps=2, audio_seconds=3.0),
            row(spoken=True, sweep=True, tokens_per_s=100.0, positions_to_first_audio=13, audio_gaps=9,
                audio_seconds=1.0, positions_to_reasoning_end=1)]
    m = group_metrics(rows)
    assert (m["n"], m["correct"], m["accuracy"], m["no_answer"], m["eos_rate"]) == (4, 3, 0.75, 0.25, 0.75)
    assert m["spoken_words"] == 4.0
    assert m["positions_to_first_text"] == 2.0  # the answer that never spoke is left out, not counted as 0
    assert m["positions_to_first_audio"] == 12.0 and m["seconds_to_first_audio"] == 0.05
    assert (m["audio_gaps"], m["audio_seconds"]) == (2.0, 3.0)  # sweep answers are cut short: no gaps from them
    assert m["tokens_per_s"] == 1000.0  # the thinker's pace from answers without talker work
    assert m["speech_during_reasoning"] == pytest.approx(2 / 3, abs=1e-4)  # the 4th spoke after its reasoning
    assert group_metrics([]) == {"n": 0}


def test_heard_numbers_reads_what_the_reasoning_wrote_first():
    """A spoken question is heard when its reasoning starts with all of its numbers, in order."""

    def asked(how, question, reasoning):
        return {**row(), "input": how, "question": question, "reasoning": reasoning}

    q = "What is forty-six plus eighty-six?"
    spoken = [
        asked("audio", q, reasoning="What is 46 plus 86?   46+86:  6+6=12 c1 =2|"),  # its transcript
        asked("audio", q, reasoning="46+86:  6+6=12 c1 =2|4+8+1=13 =132|132"),  # a scratchpad from them
        asked("audio", q, reasoning="What is 46 plus 61?   46+61:"),  # the second number misheard
        asked("audio", q, reasoning="What is 86 plus 46?   86+46:"),  # out of order
        asked("audio", q, reasoning="What is 46"),  # stopped short
    ]
    assert group_metrics(spoken)["heard_numbers"] == 0.4
    minus = asked("audio", "What is 87 minus 66?", reasoning="87-66:  7-6=1 =1|8-6=2 =21|21")
    assert group_metrics([minus])["heard_numbers"] == 1.0
    word = asked("audio", "Ana shares twenty-eight cards equally among two friends.",
               reasoning="Ana shares 28 cards equally among 2 friends.  28 shared by 2. 28/2:")
    assert group_metrics([word])["heard_numbers"] == 1.0
    # a transcript in words (model.transcript words / both): what it wrote first is what it heard
    heard = asked("audio", q, reasoning="What is forty-six plus eighty-six? What is 46 plus 81?  46+81:")
    misheard = asked("audio", q, reasoning="What is forty-six plus eighty-one?   46+86:")
    assert group_metrics([heard])["heard_numbers"] == 1.0 and group_metrics([misheard])["heard_numbers"] == 0.0
    text = asked("text", q, reasoning="46+86:")  # the numbers were in the prompt: nothing heard
    none = asked("audio", "What is the answer?", reasoning="5")
    assert group_metrics([text, none])["heard_numbers"] is None
    assert "heard_numbers" not in summarize([text], ["short_digit"], inputs=["text"])


def test_summarize_keys_splits_overall_and_sweep():
    rows = [row("short_digit-0"), row("short_digit-1", correct=False), row("long_digit-0", "long_digit"),
            row("short_digit-0", sweep=True, ratio="1:9", correct=False),
            row("long_digit-0", "long_digit", sweep=True, ratio="1:9")]
    m = summarize(rows, ["short_digit", "long_digit"], {"short_digit-0", "long_digit-0"}, "2:8")
    assert (m["short_digit/n"], m["short_digit/accuracy"], m["long_digit/accuracy"]) == (2, 0.5, 1.0)
    assert (m["overall/n"], m["overall/correct"]) == (3, 2)
    assert (m["ratio_1_9/n"], m["ratio_1_9/accuracy"], m["ratio_2_8/n"], m["ratio_2_8/accuracy"]) == (2, 0.5, 2, 1.0)
    assert list(sweep_table(m)) == ["1:9", "2:8"] and sweep_table(m)["1:9"]["accuracy"] == 0.5
    tf = summarize([{**r, "ratio": ""} for r in rows if not r["sweep"]], ["short_digit", "long_digit"],
                   {"short_digit-0", "long_digit-0"}, "")
    assert tf["sweep_questions/n"] == 2 and not any(k.startswith("ratio_") for k in tf)


def test_each_input_gets_its_accuracy_and_the_first_is_the_main():
    """evaluate.inputs [audio, text]: the same questions asked both ways; split/metric keys describe the
    main (first) input, <split>/<input>_accuracy each one."""
    audio = [{**row("short_digit-0"), "input": "audio"}, {**row("short_digit-1", correct=False), "input": "audio"}]
    text = [{**row("short_digit-0"), "input": "text"}, {**row("short_digit-1"), "input": "text"}]
    m = summarize(audio + text, ["short_digit"], set(), "2:8", inputs=["audio", "text"])
    assert (m["short_digit/n"], m["short_digit/accuracy"]) == (2, 0.5)
    assert (m["short_digit/audio_accuracy"], m["short_digit/text_accuracy"], m["overall/text_accuracy"]) == (0.5, 1.0, 1.0)
    m = summarize(audio + text, ["short_digit"], set(), "2:8", inputs=["text", "audio"])
    assert m["short_digit/accuracy"] == 1.0 and m["overall/n"] == 2


def test_every_ratio_gets_as_many_speak_slots():
    assert max_new_for(288, (2, 8), (2, 8)) == 288
    assert max_new_for(288, (2, 8), (1, 9)) == 576  # 48 speak slots, 48 blocks of 12
    assert max_new_for(288, (2, 8), (3, 7)) == 192
    assert max_new_for(288, (2, 8), (4, 6)) == 144
    for s, t in [(1, 9), (3, 7), (4, 6), (5, 20)]:
        n = max_new_for(300, (2, 8), (s, t))
        assert n % (s + t + 2) == 0 and n // (s + t + 2) * s >= 300 * 2 // 12


def _metrics(acc: float, words: float, first: float, sweep: bool) -> dict:
    m = {}
    for split in ("short_digit", "overall"):
        m.update({f"{split}/n": 4, f"{split}/accuracy": acc, f"{split}/spoken_words": words,
                  f"{split}/positions_to_first_text": first, f"{split}/seconds_to_first_text": first / 1000,
                  f"{split}/tokens_per_s": 900.0})
    if sweep:
        m.update({"ratio_1_9/n": 2, "ratio_1_9/accuracy": 0.0, "ratio_2_8/n": 2, "ratio_2_8/accuracy": 0.5})
    else:
        m.update({"sweep_questions/n": 2, "sweep_questions/accuracy": 1.0})
    return m


@pytest.fixture
def reports(tmp_path):
    for fmt, m in (("tis", _metrics(0.5, 20.0, 2.0, True)), ("think_first", _metrics(0.75, 30.0, 25.0, False))):
        d = tmp_path / "evaluate" / fmt
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
        rows = [row(ratio="" if fmt != "tis" else "2:8", positions_to_first_text=2 if fmt == "tis" else 25)]
        (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "evaluate"


def test_table_per_split_and_format(reports):
    metrics, _ = load_reports(["tis", "think_first"], reports)
    t = table(metrics, ["short_digit", "long_digit"])
    assert t["columns"][:4] == ["split", "format", "questions", "accuracy %"]
    assert [r[:2] for r in t["rows"]] == [["short_digit", "TiS"], ["short_digit", "think-first"], ["overall", "TiS"],
                                         ["overall", "think-first"]]  # long_digit was not evaluated: no row
    col = {c: i for i, c in enumerate(t["columns"])}
    assert t["rows"][0][col["accuracy %"]] == 50.0 and t["rows"][1][col["spoken words"]] == 30.0
    assert t["rows"][0][col["s to first audio"]] is None
    md = markdown(t, ["x"] * (len(t["columns"]) - 2))
    assert md.count("\n") == 2 + len(t["rows"]) and "| – |" in md
    sw = sweep_rows(metrics)
    assert [r[:2] for r in sw["rows"]] == [["TiS", "1:9"], ["TiS", "2:8"], ["think-first", "–"]]
    assert sw["rows"][2][sw["columns"].index("accuracy %")] == 100.0  # think-first on the sweep's questions


def test_compare_stage_writes_the_table_and_plots(reports, tmp_path):
    p = load_params(overrides={"evaluate": {"splits": ["short_digit", "long_digit"]}})
    res = run(p, reports=reports, out_dir=tmp_path / "compare")
    out = tmp_path / "compare"
    t = json.loads((out / "table.json").read_text())
    assert set(t) == {"columns", "rows"} and len(t["rows"]) == 4
    assert json.loads((out / "sweep.json").read_text())["rows"][0][:2] == ["TiS", "1:9"]
    md = (out / "table.md").read_text()
    assert "| overall | think-first | 4 | 75.0 | – | – | – | 30.0 |" in md and "speak:think sweep" in md
    for png in ("accuracy_vs_words", "splits", "latency", "sweep"):
        assert (out / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert res.metrics["tis_vs_think_first/spoken_words_ratio"] == pytest.approx(20 / 30, abs=1e-4)
    assert res.metrics["tis_vs_think_first/accuracy_difference"] == -0.25
    assert res.tables["compare.json"][0]["split"] == "short_digit"


def test_compare_says_on_how_many_threads_the_seconds_were_timed(reports, tmp_path):
    """The latency seconds are wall time: the table says how many torch threads each format decoded on (the flow
    runs both evaluations at once on one core each); no claim where the reports do not say."""
    p = load_params(overrides={"evaluate": {"splits": ["short_digit"]}})
    md = lambda: (tmp_path / "compare" / "table.md").read_text()  # noqa: E731
    run(p, reports=reports, out_dir=tmp_path / "compare")
    assert "wall time on this machine.\n" in md() and "thread" not in md()
    for fmt, n in (("tis", 1), ("think_first", 1)):
        m = reports / fmt / "metrics.json"
        m.write_text(json.dumps({**json.loads(m.read_text()), "evaluate/threads": n}))
    run(p, reports=reports, out_dir=tmp_path / "compare")
    assert "wall time on this machine, 1 torch thread(s) for each format.\n" in md()
    m = reports / "think_first" / "metrics.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "evaluate/threads": 2}))
    run(p, reports=reports, out_dir=tmp_path / "compare")
    assert "wall time on this machine, torch threads tis 1, think_first 2.\n" in md()


def test_compare_names_the_missing_run(reports, tmp_path):
    (reports / "think_first" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="python -m tasks.evaluate --format think_first"):
        load_reports(["tis", "think_first"], reports)


def test_compare_table_reaches_mlflow(reports, tmp_path, caplog):
    """The compare stage's result is recorded as the pipeline records it (``record``: metrics JSON at the
    artifact root, then the tables), through a real SQLite MLflow store: the table arrives and no
    "could not log table compare.json" warning (the table once collided with the metrics file of the
    same name, which MLflow then tried to append to)."""
    import logging

    import mlflow

    from tasks.core.stage import record
    from tasks.core.tracking import Tracker

    p = load_params(overrides={"evaluate": {"splits": ["short_digit", "long_digit"]}})
    res = run(p, reports=reports, out_dir=tmp_path / "compare")
    rows = res.tables["compare.json"]
    assert any(v is None for r in rows for v in r.values())  # empty cells must not break it either
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("compare-table")
    with caplog.at_level(logging.WARNING), mlflow.start_run() as r:
        record(res, "compare", Tracker(r), metrics_dir=tmp_path / "metrics")
    assert not [m for m in caplog.messages if "could not log" in m], caplog.messages
    client = mlflow.MlflowClient()
    names = {f.path for f in client.list_artifacts(r.info.run_id)} | {
        f.path for f in client.list_artifacts(r.info.run_id, "tables")}
    assert "compare.json" in names and "tables/compare.json" in names, names
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=r.info.run_id, artifact_path="tables/compare.json",
                                                                 dst_path=str(tmp_path / "dl"))).read_text())
    assert len(logged["data"]) == len(rows) and "accuracy %" in logged["columns"]

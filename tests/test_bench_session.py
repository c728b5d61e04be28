"""bench/bench_session.py's random-weight path (``--shape``), run at its CPU size: the same code
measures the 3B shape on a GPU (README: "On a GPU"), so it must not rot where CI has none."""

from __future__ import annotations

import json

import pytest

from bench import bench_session


def test_shaped_bench_runs_and_reports(tmp_path):
    out = tmp_path / "session.json"
    r = bench_session.main(["--shape", "smoke", "--dtype", "fp32", "--device", "cpu", "--max-new-tokens", "24",
                            "--repeats", "1", "--spoken-seconds", "1", "--max-audio-seconds", "1",
                            "--paced-rates", "50", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert r["model"]["shape"] == "smoke" and r["model"]["weights"] == "random"
    assert r["model"]["params_millions"]["thinker_llm"] > 0 and r["codec"]["codebooks"] == 3
    assert r["throughput"]["tokens"] == [24, 24, 24] and r["throughput"]["ratio"] > 0
    tis = r["latency"]["tis"]
    # The schedule is forced: the first response token comes right after <|speak|>, whatever the weights.
    assert tis["positions_to_first_text"] == 2
    # Audio: the talker reads one position per frame; the first chunk needs the codec's first frames.
    assert tis["positions_to_first_audio"] <= 2 + r["codec"]["first_block_frames"] + r["codec"]["lookahead_frames"]
    assert r["spoken"]["prompt_tokens"] > 25 and r["spoken"]["ms_to_first_text"] > 0


def test_shape_and_model_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit):
        bench_session.main(["--shape", "smoke", "--model", str(tmp_path)])

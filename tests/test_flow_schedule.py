"""The flow runs independent stages side by side, lends each its share of the cores, and never starts a stage
before its upstream stages are done (flows/full_pipeline.py run_stages; tasks/core/cpu.py)."""

from __future__ import annotations

import time

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows import full_pipeline as fp
from tasks.core.cpu import CpuShare, write_share

# a -> (b, c); b -> d; c -> e; (d, e) -> f.   b is long, c / d / e short; a and f run alone.
UPS = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b"}, "e": {"c"}, "f": {"d", "e"}}
SECONDS = {"a": 0.2, "b": 1.6, "c": 0.3, "d": 0.2, "e": 0.3, "f": 0.2}
BESIDE = {"b", "c", "d", "e"}
NAMES = list(UPS)


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    """A throwaway Prefect API for the flows below, stopped with the module (not at interpreter exit)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    log: dict[str, dict] = {}
    fail = set()
    beside, peers = set(BESIDE), set()  # a test may change who shares with whom (peers: only with each other)

    @task(cache_policy=NO_CACHE)
    def fake_run_stage(stage: str, parent_run_id, cpu_share: str | None = None) -> dict:
        share = CpuShare(cpu_share, every=0.0)
        rec = log[stage] = {"start": time.monotonic(), "shares": [share.cores()]}
        end = rec["start"] + SECONDS[stage]
        while time.monotonic() < end:
            time.sleep(0.05)
            rec["shares"].append(share.cores())
        rec["end"] = time.monotonic()
        if stage in fail:
            raise RuntimeError(f"stage {stage} failed (exit 1)")
        return {"stage": stage, "status": "ran", "seconds": SECONDS[stage]}

    monkeypatch.setattr(fp, "run_stage", fake_run_stage)
    monkeypatch.setattr(fp, "may_share", lambda a, b: (a in beside and b in beside) or (a != b and {a, b} <= peers))
    monkeypatch.setattr(fp, "SHARES", tmp_path / "cpu")
    return log, fail, beside, peers


def _overlap(x: dict, y: dict) -> bool:
    return x["start"] < y["end"] and y["start"] < x["end"]


def _run(parallel: int, results: list | None = None) -> list[dict]:
    @flow
    def schedule() -> list[dict]:
        return fp.run_stages(NAMES, UPS, None, parallel, results, cores=2, poll=0.02)

    return schedule()


def test_independent_stages_run_side_by_side_on_a_share_of_the_cores(fake_stages):
    log, *_ = fake_stages
    results = _run(parallel=2)
    assert [r["stage"] for r in results] == NAMES  # list order, whatever order they finished in
    for name, ups in UPS.items():  # never before its upstream stages are done
        assert all(log[name]["start"] >= log[u]["end"] for u in ups), name
    assert _overlap(log["b"], log["c"]) and _overlap(log["b"], log["e"])  # the two chains at once
    for alone in ("a", "f"):  # stages that may not share the machine run alone
        assert not any(_overlap(log[alone], log[o]) for o in NAMES if o != alone), alone
    # b starts beside c on one core and gets both back once the other chain is done
    assert log["b"]["shares"][0] == 1 and log["b"]["shares"][-1] == 2, log["b"]["shares"]
    assert log["a"]["shares"][0] == 2


def test_peers_run_beside_each_other_and_nothing_else(fake_stages):
    """d and e (evaluate@tis, evaluate@think_first) may share the machine with each other only: e, ready while b
    trains, waits for b to end, then both start at once on one core each."""
    log, _, beside, peers = fake_stages
    beside.difference_update({"d", "e"})
    peers.update({"d", "e"})
    _run(parallel=2)
    assert not _overlap(log["e"], log["b"]) and log["e"]["start"] >= log["b"]["end"]
    assert _overlap(log["d"], log["e"])
    assert log["d"]["shares"][0] == 1 and log["e"]["shares"][0] == 1, (log["d"]["shares"], log["e"]["shares"])
    assert not any(_overlap(log["f"], log[o]) for o in NAMES if o != "f")


def test_parallel_1_runs_one_stage_at_a_time(fake_stages):
    log, *_ = fake_stages
    _run(parallel=1)
    for x in NAMES:
        assert not any(_overlap(log[x], log[y]) for y in NAMES if y != x), x
        assert set(log[x]["shares"]) == {2}


def test_a_failed_stage_stops_new_ones_and_lets_the_running_finish(fake_stages):
    log, fail, *_ = fake_stages
    fail.add("c")
    results: list[dict] = []
    with pytest.raises(RuntimeError, match="stage c failed"):
        _run(parallel=2, results=results)
    assert "end" in log["b"]  # b was running beside c: it finished
    assert "e" not in log and "f" not in log  # nothing started after the failure
    assert [r["stage"] for r in results] == ["a", "b"]  # what finished is still reported


def test_the_flow_waits_for_what_dvc_says_a_stage_needs():
    """The graph comes from DVC itself (`dvc dag`): every training stage waits for the one before it."""
    from tasks.core.params import load_params
    from tasks.core.stages import pipeline_runs

    names = pipeline_runs(load_params().formats)
    ups = fp.stage_graph(names)
    assert ups["init_model"] == set()
    assert {"init_model", "synthesize"} <= ups["align"]
    assert ups["text_tis@tis"] >= {"pretrain"} and "text_tis@think_first" not in ups["acoustic_tis@tis"]
    assert {"acoustic_tis@tis", "codec"} <= ups["talker@tis"]
    assert {"evaluate@tis", "evaluate@think_first"} <= ups["compare"]


def test_a_stage_follows_the_share_it_is_lent(tmp_path, monkeypatch):
    import torch

    path = tmp_path / "cpu" / "x"
    monkeypatch.setenv("OMNI_TIS_CPU_SHARE", str(path))
    before = torch.get_num_threads()
    try:
        share = CpuShare(every=0.0)
        assert share.apply() is None and torch.get_num_threads() == before  # no file yet: untouched
        write_share(path, 1)
        assert share.apply() == 1 and torch.get_num_threads() == 1
        write_share(path, 2)
        assert share.apply() == 2 and torch.get_num_threads() == 2
        path.write_text("garbage")  # a half-written or broken file: keep the last share
        assert share.apply() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="at least one core"):
        write_share(path, 0)


def test_the_real_pipeline_shares_the_machine_where_nothing_is_timed():
    """Training stages and the codec share the cores, and so do compare and package at the end; the two
    evaluations (latency columns in wall time) share with each other only, and synthesize (Ray over every core)
    and init_model run alone."""
    from tasks.core.params import load_params
    from tasks.core.stages import may_share, pipeline_runs, runs_beside

    names = pipeline_runs(load_params().formats)
    beside = {n for n in names if runs_beside(n)}
    assert {"codec", "align", "pretrain", "text_tis@tis", "talker@think_first", "compare", "package"} <= beside
    assert not beside & {"init_model", "synthesize", "evaluate@tis", "evaluate@think_first"}
    assert may_share("evaluate@tis", "evaluate@think_first") and may_share("talker@tis", "codec")
    for other in names:
        if other not in ("evaluate@tis", "evaluate@think_first"):
            assert not may_share("evaluate@tis", other) and not may_share(other, "evaluate@think_first"), other
    assert not may_share("evaluate@tis", "evaluate@tis")
    for alone in ("init_model", "synthesize"):
        assert not any(may_share(alone, o) for o in names), alone
    ups = fp.stage_graph(names)
    assert "compare" not in ups["package"] and "package" not in ups["compare"]  # so they may overlap
    assert "evaluate@tis" not in ups["evaluate@think_first"] and "evaluate@think_first" not in ups["evaluate@tis"]

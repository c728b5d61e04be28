"""A training stage killed (SIGKILL) inside a checkpoint save or inside pruning leaves only complete
checkpoints; the rerun cleans up, resumes from the newest one and ends with exactly the losses of a
run that was never interrupted. Kills are placed by failpoints (tasks/core/checkpoint.py), not timers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from procs import child_env, kill_tree
from tasks.core import checkpoint as ck

ROOT = Path(__file__).resolve().parents[1]
DRIVER = """
import json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from tasks.core.params import load_params
from tasks.core.training import run
data, init, out, metrics = map(Path, sys.argv[2:6])
p = load_params(overrides=json.loads(sys.argv[1]))
run("text_tis", p, "tis", data_dir=data, init_dir=init, out_dir=out, metrics_dir=metrics)
"""
STEPS = 12
OVER = {"text_tis": {"steps": STEPS, "batch_size": 4, "warmup_steps": 2, "max_len": 2048},
        "trainer": {"checkpoint_every": 3, "log_every": 1, "keep_checkpoints": 2}}


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


def _run(tiny, out: Path, log: Path, failpoint: str = "") -> int:
    env = child_env(OMNI_TIS_MLFLOW="0", PYTHONPATH=str(ROOT), **{ck.FAILPOINT_ENV: failpoint})
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(OVER), str(tiny.data), str(tiny.init), str(out),
                             str(out.parent / "metrics")], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT)
    try:
        return proc.wait(timeout=300)
    finally:
        kill_tree(proc)


def _losses(out: Path) -> list[tuple[int, float]]:
    return [tuple(x) for x in ck.read_state(ck.latest(out))["history"]]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert _run(tiny, out, out.parent / "ref.log") == 0, (out.parent / "ref.log").read_text()[-3000:]
    return _losses(out)


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("failpoint,resume_at,leftover", [
    ("save:after_engine@2", 3, True),    # inside the step-6 save, after the engine state is written
    ("save:before_rename@3", 6, True),   # the step-9 checkpoint complete in its temp dir, not yet renamed
    ("prune:after_rename@1", 9, True),   # step 9 in place, step 3 renamed aside for deletion
])
def test_kill_inside_save_or_prune_then_resume(tiny, reference, tmp_path, failpoint, resume_at, leftover):
    out = tmp_path / "out"
    rc = _run(tiny, out, tmp_path / "run1.log", failpoint)
    assert rc == -9, f"the failpoint did not kill the run (exit {rc}):\n" + (tmp_path / "run1.log").read_text()[-3000:]

    # Only complete checkpoints carry a step-* name; the interrupted work is a temp leftover.
    done = ck.step_dirs(out)
    assert done and done[-1][0] == resume_at, [s for s, _ in done]
    for _, d in done:
        assert (d / "model" / "model.safetensors").exists() and (d / "trainer_state.json").exists()
        assert (d / "ds").is_dir() and (d / "tokenizer").is_dir() and (d / "rng-rank0.pt").exists()
        assert ck.read_state(d)["step"] == int(d.name.split("-")[1])
    temps = [x.name for x in out.iterdir() if ".tmp" in x.name]
    assert bool(temps) == leftover, temps

    assert _run(tiny, out, tmp_path / "run2.log") == 0, (tmp_path / "run2.log").read_text()[-3000:]
    log2 = (tmp_path / "run2.log").read_text()
    assert f"resumed from step-{resume_at:08d} at step {resume_at}" in log2
    logged = [int(m) for m in re.findall(r"text_tis step (\d+)/", log2)]
    assert logged[0] == resume_at + 1 and logged[-1] == STEPS, logged
    assert not [x for x in out.iterdir() if ".tmp" in x.name], "leftover temp checkpoint"
    got = _losses(out)
    assert [s for s, _ in got] == list(range(1, STEPS + 1)), "each step exactly once"
    np.testing.assert_allclose([l for _, l in got], [l for _, l in reference], rtol=1e-5)
    assert [s for s, _ in ck.step_dirs(out)] == [STEPS - 3, STEPS]

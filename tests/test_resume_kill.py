"""Kill a training stage with SIGKILL mid-run; the rerun resumes from the last complete checkpoint."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.core.params import load_params

DRIVER = """
import dataclasses, json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from tasks.core.params import load_params
from tasks.core.stage_main import run_stage
p = load_params()
over = json.loads(sys.argv[1])
p = dataclasses.replace(p, text_tis=dataclasses.replace(p.text_tis, **over["text_tis"]),
                        trainer=dataclasses.replace(p.trainer, **over["trainer"]))
run_stage("text_tis", Path(sys.argv[2]), Path(sys.argv[3]), "tis", p=p, out_dir=Path(sys.argv[4]),
          metrics_dir=Path(sys.argv[5]))
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tasks import init_model, synthesize

    tmp = tmp_path_factory.mktemp("kill")
    p = load_params()
    p = dataclasses.replace(
        p,
        model=dataclasses.replace(p.model, tokenizer_corpus=300, tokenizer_vocab_size=600),
        synthesize=dataclasses.replace(p.synthesize, num_problems=80, asr_fraction=0.0),
    )
    init_model.run(p, tmp / "init")
    synthesize.run(p, out_dir=tmp / "data", tokenizer_dir=tmp / "init" / "tokenizer", use_ray=False)
    return tmp


def _launch(tmp: Path, log: Path, steps: int) -> subprocess.Popen:
    over = {"text_tis": {"steps": steps, "batch_size": 4, "warmup_steps": 2},
            "trainer": {"checkpoint_every": 5, "log_every": 1, "keep_checkpoints": 2}}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(over), str(tmp / "data"), str(tmp / "init"), str(tmp / "out"),
         str(tmp / "metrics")],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**__import__("os").environ, "OMNI_TIS_MLFLOW": "0"},
    )


@pytest.mark.integration
def test_sigkill_then_resume_continues_the_step_counter(prepared):
    tmp, steps = prepared, 30
    out = tmp / "out"
    proc = _launch(tmp, tmp / "run1.log", steps)
    deadline = time.time() + 240
    while not (out / "step-00000010").exists():
        assert proc.poll() is None, (tmp / "run1.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint at step 10 within 4 minutes"
        time.sleep(0.05)
    time.sleep(0.5)  # kill somewhere in the next steps, maybe in the middle of a checkpoint save
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # No half-written checkpoint under a step-* name: every one is complete.
    done = sorted(d for d in out.iterdir() if d.name.startswith("step-"))
    assert done
    for d in done:
        assert (d / "model" / "model.safetensors").exists() and (d / "trainer_state.json").exists()
        assert (d / "ds").is_dir() and (d / "tokenizer").is_dir()
    last = json.loads((done[-1] / "trainer_state.json").read_text())["step"]
    assert last >= 10 and last < steps

    proc = _launch(tmp, tmp / "run2.log", steps)
    assert proc.wait(timeout=600) == 0, (tmp / "run2.log").read_text()[-3000:]
    log2 = (tmp / "run2.log").read_text()
    assert f"resumed from step-{last:08d} at step {last}" in log2
    logged = [int(m) for m in re.findall(r"text_tis step (\d+)/", log2)]
    assert logged[0] == last + 1, "the resumed run must continue right after the checkpoint"
    assert logged == sorted(set(logged)) and logged[-1] == steps
    assert not any(d.name.endswith(".tmp") for d in out.iterdir()), "leftover temp checkpoint"
    state = json.loads((out / f"step-{steps:08d}" / "trainer_state.json").read_text())
    assert [s for s, _ in state["history"]] == list(range(1, steps + 1)), "each step exactly once"

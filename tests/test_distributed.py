"""Two DeepSpeed ranks on CPU (gloo) compute the same losses as one rank on the same global batch.

    .venv/bin/python -m pytest tests/test_distributed.py -q -m integration
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.core.params import StageParams

ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import json, pickle, sys
from pathlib import Path
from tasks.core.trainer import train
p, sp, data, init, out = pickle.loads(bytes.fromhex(sys.argv[1]))
res = train("pretrain", p, sp, Path(data), Path(init), Path(out))
if res.checkpoint and __import__("os").environ["RANK"] == "0":
    Path(out, "result.json").write_text(json.dumps({"history": res.history, "val": res.val_loss}))
"""


@pytest.fixture(scope="module")
def tiny():
    from audio_data import tiny_setup

    return tiny_setup()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(world: int, args: str, tmp: Path) -> None:
    port = str(_port())
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, PYTHONPATH=str(ROOT), OMNI_TIS_MLFLOW="0",
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, args], env=env, cwd=ROOT,
                                      stdout=open(tmp / f"rank{rank}.log", "w"), stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=300) for p in procs]
    logs = "\n".join((tmp / f"rank{r}.log").read_text()[-2000:] for r in range(world))
    assert codes == [0] * world, logs


@pytest.mark.integration
def test_two_ranks_match_one_rank(tiny, tmp_path):
    import pickle

    # pretrain: mixed text/audio prompts, so ranks see different feature batches.
    sp = StageParams(steps=3, batch_size=4, lr=2e-3, warmup_steps=1, max_len=1024, text_fraction=0.5)
    results = {}
    for world in (1, 2):
        out = tmp_path / f"w{world}"
        out.mkdir()
        run_ranks(world, pickle.dumps((tiny.p, sp, str(tiny.data), str(tiny.init), str(out))).hex(), tmp_path)
        results[world] = json.loads((out / "result.json").read_text())
    one, two = results[1], results[2]
    assert [s for s, _ in two["history"]] == [1, 2, 3]
    np.testing.assert_allclose([l for _, l in two["history"]], [l for _, l in one["history"]], rtol=2e-4)
    assert two["val"] == pytest.approx(one["val"], rel=2e-4)

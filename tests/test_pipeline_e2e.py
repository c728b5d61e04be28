"""The whole product path on a tiny profile: what `make pipeline` does, against real local servers.

Real Prefect server + deployment (`prefect deployment run full-pipeline/local`), real MLflow server
(SQLite store), real DVC caching, remote push and pull, and `dvc exp run -S`. Runs in a throwaway
copy of the repository with tiny params, on free loopback ports.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import repo_env, write_params

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], repo: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


def _kill_leftovers(repo: Path) -> list[str]:
    """Kill every process still running in the throwaway repository (a served flow, a DVC stage, a
    server): whatever happened in the test, nothing it started outlives it."""
    import psutil

    gone = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        try:
            if proc.info["cwd"] and Path(proc.info["cwd"]).is_relative_to(repo) and proc.pid != os.getpid():
                gone.append(" ".join(proc.info["cmdline"] or [])[:80])
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return gone


def _pipeline(repo: Path, env: dict) -> dict:
    r = _run([sys.executable, "-m", "flows.run_pipeline"], repo, env)
    assert r.returncode == 0, f"pipeline failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert "[pipeline] Prefect UI: http://127.0.0.1:" in r.stdout
    assert "[pipeline] MLflow UI:  http://127.0.0.1:" in r.stdout
    res = json.loads((repo / ".run" / "last_pipeline.json").read_text())
    res["stdout"] = r.stdout
    return res


def _status(res: dict) -> dict[str, str]:
    return {x["stage"]: x["status"] for x in res["stages"]}


@pytest.fixture
def servers_env(tiny_repo, tmp_path):
    mlflow_port = _free_port()
    env = repo_env(tiny_repo, PREFECT_PORT=str(_free_port()), MLFLOW_PORT=str(mlflow_port), OMNI_TIS_MLFLOW="1",
                   MLFLOW_TRACKING_URI_TEST=f"http://127.0.0.1:{mlflow_port}", BENTOML_HOME=str(tmp_path / "bentoml"),
                   OMNI_TIS_CACHE=str(tmp_path / "cache"))
    write_params(tiny_repo, {"dvc": {"remote_url": str(tmp_path / "remote")}})
    subprocess.run(["git", "commit", "-qam", "remote"], cwd=tiny_repo, check=True)
    try:
        yield env
    finally:
        try:
            _run([sys.executable, "-m", "flows.servers", "stop"], tiny_repo, env, timeout=120)
        finally:
            _kill_leftovers(tiny_repo)


@pytest.mark.timeout(2400)
def test_make_pipeline_path_end_to_end(tiny_repo, servers_env, tmp_path):
    repo, env = tiny_repo, servers_env
    stages = subprocess.run([str(Path(sys.executable).parent / "dvc"), "stage", "list", "--name-only"],
                            cwd=repo, env=env, capture_output=True, text=True, check=True).stdout.split()

    # 1. First run: every stage runs, through the served deployment.
    first = _pipeline(repo, env)
    assert _status(first) == {s: "ran" for s in stages}, first["stdout"][-4000:]
    print({x["stage"]: x["seconds"] for x in first["stages"]})
    # A handful of steps from a fresh start must lower the loss; later stages start near their floor
    # (their falling curves are checked by the stage tests and the real pipeline run).
    for s in ("align", "text_tis@tis"):
        m = json.loads((repo / "metrics" / f"{s}.json").read_text())
        assert m["train/loss"] < m["train/first_loss"], f"{s}: loss did not fall: {m}"
    from tasks.core.stages import STAGES

    for s in stages:
        assert (repo / "metrics" / f"{s}.json").exists(), s
        if s.split("@")[0] in STAGES:
            assert (repo / "metrics" / f"{s}_loss.png").exists(), s

    # Evaluation: both formats measured, the comparison table printed by `make pipeline` and posted
    # on the flow run; the package stage ends with a Bento that carries the TiS model.
    for fmt in ("tis", "think_first"):
        m = json.loads((repo / "reports" / "evaluate" / fmt / "metrics.json").read_text())
        assert 0.0 <= m["overall/accuracy"] <= 1.0 and m["overall/spoken_words"] >= 0, m  # 6 steps: may say nothing
        assert {f"{sp}/accuracy" for sp in ("short_digit", "long_digit", "single_step_reasoning",
                                            "multi_step_reasoning")} <= m.keys(), m
        preds = (repo / "reports" / "evaluate" / fmt / "predictions.jsonl").read_text().splitlines()
        assert preds and all({"question", "gold", "output", "extracted", "correct"} <= json.loads(x).keys()
                             for x in preds)
    table = (repo / "reports" / "compare" / "table.md").read_text()
    assert "TiS vs think-first" in first["stdout"] and table.splitlines()[0] in first["stdout"]
    package = json.loads((repo / "reports" / "package.json").read_text())
    assert package["bento_tag"].startswith("omni-tis:") and package["model_tag"].startswith("omni-tis:")
    assert (tmp_path / "bentoml" / "bentos").is_dir()

    # MLflow: a model-training experiment; one parent run, a child per stage, params and a loss history,
    # datasets and upstream checkpoints as run inputs with DVC's hashes.
    import mlflow
    from mlflow.tracking import MlflowClient

    # Through the running MLflow server, as a user browsing the UI would (its store is repo/mlflow.db).
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI_TEST"])
    exp = client.get_experiment_by_name("omni-tis")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pipeline") == "full-pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(children) == set(stages)
    assert children["package"].data.tags.get("bentoml.bento") == package["bento_tag"]
    ev = children["evaluate@tis"]
    assert "overall/accuracy" in ev.data.metrics
    assert any(a.path.endswith(".png") for a in client.list_artifacts(ev.info.run_id, "plots"))
    tt = children["text_tis@tis"]
    assert tt.data.params["text_tis.lr"]
    hist = client.get_metric_history(tt.info.run_id, "train/loss")
    assert len(hist) >= 3 and hist[-1].value < hist[0].value
    arts = [a.path for a in client.list_artifacts(tt.info.run_id, "plots")]
    assert any(a.endswith(".png") for a in arts)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    inputs = {d.dataset.name: d.dataset.digest for d in client.get_run(tt.info.run_id).inputs.dataset_inputs}
    data_md5 = next(o["md5"] for o in lock["synthesize"]["outs"] if o["path"] == "data/synthesize")
    assert inputs.get("data/synthesize") == data_md5.removesuffix(".dir"), inputs
    assert "checkpoints/pretrain" in inputs
    del mlflow

    # 2. Nothing changed: DVC skips every stage.
    second = _pipeline(repo, env)
    assert set(_status(second).values()) == {"skipped"}
    assert second["seconds"] < 60, f"no-op pipeline took {second['seconds']}s"

    # 3. A text_tis param changes: text_tis and everything downstream of it rerun, nothing upstream.
    data = yaml.safe_load((repo / "params.yaml").read_text())
    write_params(repo, {"text_tis": {"lr": data["text_tis"]["lr"] / 2}})
    third = _status(_pipeline(repo, env))
    upstream = {"init_model", "synthesize", "codec", "align", "pretrain"}
    assert upstream <= set(stages)
    assert {s: third[s] for s in upstream} == {s: "skipped" for s in upstream}, third
    downstream = [s for s in stages if s not in upstream]
    assert {"text_tis@tis", "acoustic_tis@think_first", "talker@tis"} <= set(downstream)
    assert {s: third[s] for s in downstream} == {s: "ran" for s in downstream}, third

    # 4. The pipeline pushed to the DVC remote: another clone pulls datasets and checkpoints.
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "lock"], cwd=repo, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "remote", "add", "--local", "-f", "-d", "storage", str(tmp_path / "remote")],
                   cwd=clone, check=True, capture_output=True)
    r = subprocess.run([dvc, "pull"], cwd=clone, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (clone / "data" / "synthesize" / "train.parquet").exists()
    ckpts = list((clone / "checkpoints" / "text_tis" / "tis").glob("step-*/model/model.safetensors"))
    assert ckpts, "checkpoint not restored by dvc pull"

    # 5. Experiments: dvc exp run -S changes a param for one run and records it.
    r = subprocess.run([dvc, "exp", "run", "-S", "text_tis.steps=3", "text_tis@tis"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((repo / "metrics" / "text_tis@tis.json").read_text())["steps"] == 3
    shown = subprocess.run([dvc, "exp", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True)
    assert "text_tis.steps" in shown.stdout or '"steps": 3' in shown.stdout
    shutil.rmtree(clone, ignore_errors=True)

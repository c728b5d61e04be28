"""The `package` stage: the trained TiS model into a BentoML store (a temporary BENTOML_HOME), a Bento
built from bentofile.yaml pinned to it, reports/package.json; unchanged inputs reuse both, a changed
input makes a new model; the built Bento serves from the store outside the repository.

    .venv/bin/python -m pytest tests/test_package.py -q
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import repo_env, write_params
from service_client import bentoml_serve, free_port, post_stream


def _inputs(repo: Path) -> None:
    """What the stage reads, as the pipeline leaves it: talker@tis checkpoints, the codec, evaluate@tis."""
    from audio_data import tiny_setup

    t = tiny_setup()
    for step in ("step-00000002", "step-00000003"):
        ck = repo / "checkpoints" / "talker" / "tis" / step
        shutil.copytree(t.init / "model", ck / "model")
        shutil.copytree(t.init / "tokenizer", ck / "tokenizer")
    shutil.copytree(t.codec, repo / "checkpoints" / "codec")
    m = repo / "reports" / "evaluate" / "tis" / "metrics.json"
    m.parent.mkdir(parents=True)
    m.write_text(json.dumps({"overall": {"accuracy": 0.25, "spoken_words": 31.5}, "short_digit/accuracy": 0.5}))
    (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"codec": {"cmd": "python -m tasks.codec",
                                                   "outs": [{"path": "checkpoints/codec", "md5": "abc.dir"}]}}}))


def _package(repo: Path, env: dict) -> dict:
    r = subprocess.run([sys.executable, "-m", "tasks.package"], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return json.loads((repo / "reports" / "package.json").read_text())


def _bentoml(env: dict, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "bentoml", *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_package_stores_builds_skips_and_serves(tiny_repo, tmp_path):
    repo = tiny_repo
    write_params(repo, {"serve": {"max_audio_seconds": 1.0}})
    subprocess.run(["git", "commit", "-qam", "serve params"], cwd=repo, check=True)
    _inputs(repo)
    home = tmp_path / "bentoml"
    env = repo_env(repo, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true", OMNI_TIS_MLFLOW="0")
    env.pop("OMNI_TIS_MODEL_DIR", None)

    first = _package(repo, env)
    assert first["model_created"] and first["bento_built"]
    assert first["checkpoint"] == "checkpoints/talker/tis/step-00000003"  # the latest checkpoint
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert first["git"] == {"commit": head, "dirty": False}
    assert first["dvc_lock_sha256"] and first["serve"] == f"bentoml serve {first['bento_tag']}"
    metrics = json.loads((repo / "metrics" / "package.json").read_text())
    assert metrics["package/model_created"] == 1

    # The store holds the model: the checkpoint, codec (not its training codes), params, metrics, manifest.
    models = json.loads(_bentoml(env, "models", "list", "-o", "json"))
    assert [m["tag"] for m in models] == [first["model_tag"]]
    name, version = first["model_tag"].split(":")
    stored = home / "models" / name / version
    assert {p.name for p in stored.iterdir()} >= {"model", "tokenizer", "codec", "params.yaml", "metrics.json",
                                                   "omni_tis.json"}
    assert (stored / "codec" / "codec.json").exists() and not (stored / "codec" / "codes.parquet").exists()
    assert json.loads((stored / "metrics.json").read_text())["overall"]["accuracy"] == 0.25
    assert (stored / "params.yaml").read_text() == (repo / "params.yaml").read_text()
    manifest = json.loads((stored / "omni_tis.json").read_text())
    assert manifest["format"] == "tis" and manifest["schedule"] == {"speak": 2, "think": 8}
    assert manifest["git"]["commit"] == head and manifest["dvc"]["outs"] == {"checkpoints/codec": "abc.dir"}
    model_yaml = yaml.safe_load((stored / "model.yaml").read_text())
    assert model_yaml["labels"]["fingerprint"] == manifest["fingerprint"][:32]
    assert model_yaml["metadata"]["metrics"]["overall/accuracy"] == 0.25

    # The Bento: pinned to exactly that model (build argument), carrying the service, page and params.
    bento = yaml.safe_load((home / "bentos" / Path(first["bento_tag"].replace(":", "/")) / "bento.yaml").read_text())
    assert bento["args"] == {"model": first["model_tag"]}
    assert [m["tag"] for m in bento["services"][0]["models"]] == [first["model_tag"]]
    src = home / "bentos" / Path(first["bento_tag"].replace(":", "/")) / "src"
    for f in ("service.py", "params.yaml", "web/index.html", "web/app.js", "models/session.py", "models/manifest.py",
              "tasks/core/params.py", "serve/routes.py", "serve/requests.py", "serve/scheduler.py", "serve/runtime.py"):
        assert (src / f).is_file(), f
    assert bento["services"][0]["config"]["http"]["host"] == "127.0.0.1"

    # Unchanged inputs: the same model and Bento, nothing new in the store.
    again = _package(repo, env)
    assert (again["model_tag"], again["bento_tag"]) == (first["model_tag"], first["bento_tag"])
    assert not again["model_created"] and not again["bento_built"]
    assert len(json.loads(_bentoml(env, "models", "list", "-o", "json"))) == 1

    # The Bento serves from the store, away from the repository.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    serve_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    with bentoml_serve(first["bento_tag"], serve_env, free_port(), cwd=outside, log_dir=tmp_path) as url:
        h = httpx.get(f"{url}/v1/health").json()
        assert h["model"] == first["model_tag"] and h["schedule"] == {"speak": 2, "think": 8}
        s = post_stream(url, json_body={"text": "What is 3 plus 4?", "options": {"max_new_tokens": 12}})
        assert s.types[0] == "start" and s.types[-1] == "done" and "audio" in s.types

    # A changed input (new evaluation metrics) makes a new model version and a new Bento.
    m = repo / "reports" / "evaluate" / "tis" / "metrics.json"
    m.write_text(json.dumps({"overall": {"accuracy": 0.5}}))
    third = _package(repo, env)
    assert third["model_created"] and third["bento_built"] and third["model_tag"] != first["model_tag"]


def test_assemble_names_what_is_missing(tmp_path):
    from tasks.package import assemble

    (tmp_path / "ckpt" / "model").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer/"):
        assemble(tmp_path / "out", tmp_path / "ckpt", None, {}, tmp_path / "p.yaml", {"speak": 2, "think": 8})
    (tmp_path / "ckpt" / "tokenizer").mkdir()
    (tmp_path / "codec").mkdir()
    with pytest.raises(FileNotFoundError, match="codec stage"):
        assemble(tmp_path / "out", tmp_path / "ckpt", tmp_path / "codec", {}, tmp_path / "p.yaml",
                 {"speak": 2, "think": 8})
    assert not (tmp_path / "out").exists()


def test_fingerprint_covers_names_and_bytes(tmp_path):
    from tasks.package import fingerprint

    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"12")
    (d / "sub" / "b.txt").write_text("x")
    fp = fingerprint([d], tmp_path)
    assert fingerprint([d], tmp_path) == fp
    (d / "a.bin").write_bytes(b"13")
    changed = fingerprint([d], tmp_path)
    assert changed != fp
    (d / "a.bin").rename(d / "c.bin")
    assert fingerprint([d], tmp_path) not in (fp, changed)

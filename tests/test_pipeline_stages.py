"""The pipeline's one list of stages (tasks/core/stages.PIPELINE) and everything that must follow it:
dvc.yaml's stages (names, order, matrix, commands), each stage module's STAGE, the Prefect flow's
task order and the MLflow run names; and the one checkpoint loader."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from tasks.core.params import load_params
from tasks.core.stages import ORDER, PIPELINE, STAGES, pipeline_runs, run_name

ROOT = Path(__file__).resolve().parents[1]


def dvc_yaml_runs(dvc: dict, formats) -> list[str]:
    """dvc.yaml's stages in order, matrix stages expanded over ``formats`` as DVC does."""
    out = []
    for name, st in dvc["stages"].items():
        matrix = st.get("matrix")
        if matrix:
            assert list(matrix) == ["format"] and matrix["format"] == "${formats}", (name, matrix)
            out += [f"{name}@{f}" for f in formats]
        else:
            out.append(name)
    return out


def check(dvc: dict, formats) -> list[str]:
    """What differs between dvc.yaml and PIPELINE ('' items when nothing)."""
    problems = []
    if dvc_yaml_runs(dvc, formats) != pipeline_runs(formats):
        problems.append(f"order/names: dvc.yaml {dvc_yaml_runs(dvc, formats)} != PIPELINE {pipeline_runs(formats)}")
    for s in PIPELINE:
        st = dvc["stages"].get(s.name)
        if st is None:
            continue
        want = f"python -m {s.module}" + (" --format ${item.format}" if s.per_format else "")
        if st["cmd"] != want:
            problems.append(f"{s.name}: cmd {st['cmd']!r} != {want!r}")
        if bool(st.get("matrix")) != s.per_format:
            problems.append(f"{s.name}: matrix {bool(st.get('matrix'))} != per_format {s.per_format}")
    return problems


@pytest.fixture(scope="module")
def dvc():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_dvc_yaml_follows_the_pipeline_list(dvc):
    formats = load_params().formats
    assert check(dvc, formats) == []
    assert pipeline_runs(formats)[:5] == ["init_model", "synthesize", "codec", "align", "pretrain"]


def test_a_disagreement_is_caught(dvc):
    """A stage added to dvc.yaml only, two stages swapped, a wrong command: each fails the check."""
    formats = ("tis", "think_first")
    extra = {"stages": {**dvc["stages"], "mathqa": {"cmd": "python -m tasks.mathqa"}}}
    assert any("order/names" in p for p in check(extra, formats))
    names = list(dvc["stages"])
    swapped = dict(dvc["stages"])
    i, j = names.index("codec"), names.index("synthesize")
    names[i], names[j] = names[j], names[i]
    assert any("order/names" in p for p in check({"stages": {n: swapped[n] for n in names}}, formats))
    wrong = {"stages": {**dvc["stages"], "compare": {**dvc["stages"]["compare"], "cmd": "python -m tasks.evaluate"}}}
    assert any(p.startswith("compare: cmd") for p in check(wrong, formats))


def test_each_module_names_its_stage():
    for s in PIPELINE:
        mod = importlib.import_module(s.module)
        assert getattr(mod, "STAGE", None) == s.name, s
    assert [s.name for s in PIPELINE if s.name in STAGES] == list(ORDER)  # training stages keep their order


def test_the_flow_runs_the_list_and_refuses_a_dvc_yaml_that_disagrees(monkeypatch):
    from flows import full_pipeline as fp

    formats = ("tis", "think_first")
    monkeypatch.setattr(fp, "dvc_stage_names", lambda: pipeline_runs(formats))
    assert fp.stage_names(formats) == pipeline_runs(formats)
    monkeypatch.setattr(fp, "dvc_stage_names", lambda: [n for n in pipeline_runs(formats) if n != "compare"])
    with pytest.raises(RuntimeError, match="dvc.yaml and tasks/core/stages.py PIPELINE disagree"):
        fp.stage_names(formats)


def test_the_flow_agrees_with_dvc_itself():
    """`dvc stage list` (DVC's own reading of dvc.yaml) gives the pipeline list."""
    from flows import full_pipeline as fp

    assert fp.dvc_stage_names() == pipeline_runs(load_params().formats)


def test_run_names_are_dvc_names():
    assert run_name("text_tis", "tis") == "text_tis@tis" and run_name("codec", None) == "codec"
    from tasks.core import stage

    assert stage.run_name is run_name  # the stage CLI names its MLflow run with the function the list uses


def test_one_checkpoint_loader():
    """Model + tokenizer of a checkpoint are loaded in one place (models.omni.load_checkpoint)."""
    offenders = []
    for f in [*ROOT.glob("tasks/**/*.py"), *ROOT.glob("models/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("flows/*.py")]:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if (re.search(r"Qwen2_5OmniForConditionalGeneration\.from_pretrained\(str\(\w+ / \"model\"\)", line)
                    and f != ROOT / "models" / "omni.py"):
                offenders.append(f"{f.relative_to(ROOT)}:{n}")
    assert not offenders, "load a checkpoint with models.omni.load_checkpoint: " + ", ".join(offenders)


def test_load_checkpoint_refuses_a_directory_that_is_not_one(tmp_path):
    from models.omni import load_checkpoint

    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match="not a model checkpoint: it needs model/"):
        load_checkpoint(tmp_path)

"""The stage CLI: what DVC and the `deepspeed` launcher call (`python -m tasks.<stage> ...`), and the
shared entry that writes metrics and logs them."""

from __future__ import annotations

import json

import pytest

from tasks.core import stage as stage_mod
from tasks.core import training
from tasks.core.params import ROOT


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    seen = {}

    def run(stage, p, fmt, tracker):
        seen.update(stage=stage, fmt=fmt, paths=training.paths(stage, fmt))
        return stage_mod.StageResult({"train/loss": 1.5, "note": "x"}, "done")

    monkeypatch.setattr(training, "run", run)
    monkeypatch.setattr(stage_mod, "METRICS_DIR", tmp_path)
    return seen


def test_cli_accepts_the_deepspeed_launcher_arguments(fake_run, tmp_path):
    from tasks import acoustic_tis

    acoustic_tis.main(["--local_rank=1", "--format", "think_first"])
    assert fake_run["stage"] == "acoustic_tis" and fake_run["fmt"] == "think_first"
    assert fake_run["paths"] == (ROOT / "data/synthesize", ROOT / "checkpoints/text_tis/think_first",
                                 ROOT / "checkpoints/acoustic_tis/think_first")
    assert json.loads((tmp_path / "acoustic_tis@think_first.json").read_text()) == {"train/loss": 1.5, "note": "x"}


def test_upstream_of_a_format_free_stage_has_no_format(fake_run):
    from tasks import text_tis

    text_tis.main(["--format", "tis"])
    assert fake_run["paths"][1] == ROOT / "checkpoints/pretrain"


def test_cli_rejects_an_unknown_format(capsys):
    from tasks import text_tis

    with pytest.raises(SystemExit):
        text_tis.main(["--format", "tiss"])
    assert "invalid choice: 'tiss'" in capsys.readouterr().err


def test_format_free_stages_take_no_format():
    from tasks import align

    with pytest.raises(SystemExit):
        align.main(["--format", "tis"])

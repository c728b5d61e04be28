"""The stage CLI: what DVC and the `deepspeed` launcher call (`python -m tasks.<stage> ...`)."""

from __future__ import annotations

import pytest

from tasks.core import stage_main
from tasks.core.params import ROOT


def test_cli_accepts_the_deepspeed_launcher_arguments(monkeypatch):
    seen = {}
    monkeypatch.setattr(stage_main, "run_stage", lambda stage, data, init, fmt: seen.update(
        stage=stage, data=data, init=init, fmt=fmt))
    stage_main.main("acoustic_tis", "data/synthesize", "checkpoints/text_tis/{format}",
                    argv=["--local_rank=1", "--format", "think_first"])
    assert seen == {"stage": "acoustic_tis", "data": ROOT / "data/synthesize",
                    "init": ROOT / "checkpoints/text_tis/think_first", "fmt": "think_first"}


def test_cli_rejects_an_unknown_format(capsys):
    with pytest.raises(SystemExit):
        stage_main.main("text_tis", "data/synthesize", "checkpoints/pretrain", argv=["--format", "tiss"])
    assert "invalid choice: 'tiss'" in capsys.readouterr().err


def test_format_free_stages_take_no_format():
    with pytest.raises(SystemExit):
        stage_main.main("align", "data/synthesize", "checkpoints/init_model", argv=["--format", "tis"])

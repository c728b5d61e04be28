"""dvc_inputs: the data and checkpoint deps a stage logs to MLflow, with DVC's hashes from dvc.lock."""

from __future__ import annotations

import textwrap

from tasks.core.tracking import dvc_inputs

DVC_YAML = textwrap.dedent("""\
    stages:
      talker:
        matrix:
          format: [tis]
        cmd: python -m tasks.talker --format ${item.format}
        deps:
          - tasks/talker.py
          - data/synthesize
          - checkpoints/acoustic_tis/${item.format}
""")
LOCK = textwrap.dedent("""\
    schema: '2.0'
    stages:
      synthesize:
        cmd: python -m tasks.synthesize
        outs:
        - path: data/synthesize
          md5: abc.dir
""")


def _repo(tmp_path, lock: str | None):
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    if lock is not None:
        (tmp_path / "dvc.lock").write_text(lock)
    return tmp_path


def test_inputs_carry_the_lock_hashes(tmp_path):
    got = dvc_inputs("talker", "tis", root=_repo(tmp_path, LOCK))
    assert got == [("data/synthesize", "abc.dir"), ("checkpoints/acoustic_tis/tis", None)]


def test_a_lock_being_rewritten_does_not_fail_the_stage(tmp_path, caplog):
    """With flow.parallel another stage's `dvc repro` rewrites dvc.lock while this stage starts: an empty or
    cut-short file (as the e2e pipeline once read it: AttributeError on None) gives the deps without hashes."""
    for lock in ("", "schema: '2.0'\nstages:\n  synthesize:\n    outs:\n    - path: [data", "- just\n- a list\n"):
        got = dvc_inputs("talker", "tis", root=_repo(tmp_path, lock))
        assert got == [("data/synthesize", None), ("checkpoints/acoustic_tis/tis", None)], lock
    assert "could not be read" in caplog.text
    (tmp_path / "dvc.lock").unlink()  # no lock yet (a stage run by hand before any dvc repro)
    assert dvc_inputs("talker", "tis", root=tmp_path) == [("data/synthesize", None), ("checkpoints/acoustic_tis/tis", None)]

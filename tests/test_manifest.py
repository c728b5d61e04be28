"""models/manifest.py: the one typed record of ``omni_tis.json`` that tasks/package.py writes and the
service reads (round trip, and a clear error for every way a file can be wrong).

    .venv/bin/python -m pytest tests/test_manifest.py -q
"""

from __future__ import annotations

import json

import pytest

from models.manifest import FILE, Manifest, ManifestError, Schedule

GOOD = {"format": "tis", "schedule": {"speak": 2, "think": 8}, "checkpoint": "checkpoints/talker/tis/step-00000060",
        "codec": True, "fingerprint": "ab" * 32, "git": {"commit": "c0ffee", "dirty": False},
        "dvc": {"lock_sha256": None, "outs": {}}}


def test_round_trip(tmp_path):
    m = Manifest.from_dict(GOOD)
    assert m.schedule == Schedule(2, 8) and m.format == "tis" and m.git["commit"] == "c0ffee"
    m.write(tmp_path)
    assert json.loads((tmp_path / FILE).read_text()) == GOOD  # the JSON shape the store has always held
    assert Manifest.read(tmp_path) == m
    bare = Manifest("think_first", Schedule(1, 9), "ckpt", False, "f" * 64)
    assert "git" not in bare.to_dict() and Manifest.from_dict(bare.to_dict()) == bare


@pytest.mark.parametrize("change,words", [
    ({"format": "tts"}, "format must be one of"),
    ({"schedule": {"speak": 2}}, "schedule must be"),
    ({"schedule": {"speak": 0, "think": 8}}, "schedule.speak must be an integer >= 1"),
    ({"schedule": {"speak": 2, "think": "8"}}, "schedule.think"),
    ({"codec": "yes"}, "codec must be true or false"),
    ({"fingerprint": ""}, "fingerprint"),
    ({"voice": "x"}, "unknown ['voice']"),
    ({"format": None, "drop": "format"}, "missing ['format']"),
])
def test_a_wrong_manifest_is_named(tmp_path, change, words):
    data = {**GOOD, **change}
    if "drop" in change:
        data.pop(change["drop"])
        data.pop("drop")
    (tmp_path / FILE).write_text(json.dumps(data))
    with pytest.raises(ManifestError) as e:
        Manifest.read(tmp_path)
    assert words in str(e.value) and FILE in str(e.value)


def test_missing_or_not_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="tasks.package"):
        Manifest.read(tmp_path)
    (tmp_path / FILE).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.read(tmp_path)

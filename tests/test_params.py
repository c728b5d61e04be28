"""params.yaml loads, and malformed params fail with the key's name."""

from __future__ import annotations

import pytest
import yaml

from tasks.core.params import ROOT, ParamsError, from_dict, load_params, Params


def test_repository_params_load():
    p = load_params()
    assert p.schedule.speak == 2 and p.schedule.think == 8
    assert set(p.formats) == {"tis", "think_first"}


def _with(tmp_path, change):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    change(data)
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


@pytest.mark.parametrize("change, match", [
    (lambda d: d["text_tis"].update(stepz=3), r"text_tis\.stepz"),
    (lambda d: d.update(bogus=1), "bogus"),
    (lambda d: d["trainer"].update(zero_stage=5), r"trainer\.zero_stage=5 is not one of"),
    (lambda d: d["schedule"].update(speak=0), "speak >= 1"),
    (lambda d: d["text_tis"].update(steps="many"), r"text_tis\.steps must be int"),
    (lambda d: d.update(formats=["tis", "tis"]), "once each"),
    (lambda d: d["model"]["tiny"].update(hidden_size=130), "divisible"),
])
def test_bad_params_name_the_key(tmp_path, change, match):
    with pytest.raises(ParamsError, match=match):
        load_params(_with(tmp_path, change))


def test_defaults_equal_an_empty_file():
    assert from_dict(Params, {}) == Params()

"""params.yaml is the single source of truth: it loads, every key is required, bad values name the key."""

from __future__ import annotations

import pytest
import yaml

from tasks.core.params import ROOT, ParamsError, load_params


def test_repository_params_load():
    p = load_params()
    assert p.schedule.speak == 2 and p.schedule.think == 8
    assert set(p.formats) == {"tis", "think_first"}
    assert p.pretrain.text_fraction == yaml.safe_load((ROOT / "params.yaml").read_text())["pretrain"]["text_fraction"]


def _with(tmp_path, change):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    change(data)
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


@pytest.mark.parametrize("change, match", [
    (lambda d: d["text_tis"].update(stepz=3), r"text_tis\.stepz: unknown key"),
    (lambda d: d.update(bogus=1), "bogus: unknown key"),
    (lambda d: d["trainer"].update(zero_stage=5), r"trainer\.zero_stage: Input should be 0, 1, 2 or 3 \(got 5\)"),
    (lambda d: d["schedule"].update(speak=0), "speak >= 1"),
    (lambda d: d["text_tis"].update(steps="many"), r"text_tis\.steps: Input should be a valid integer \(got 'many'\)"),
    (lambda d: d["text_tis"].update(steps="3"), r"text_tis\.steps: Input should be a valid integer"),
    (lambda d: d["trainer"].update(grad_clip=True), r"trainer\.grad_clip: Input should be a valid number"),
    (lambda d: d.update(formats=["tis", "tis"]), "once each"),
    (lambda d: d["model"]["tiny"].update(hidden_size=130), "divisible"),
    (lambda d: d["text_tis"].update(text_fraction=0.5), r"text_tis\.text_fraction: unknown key"),
    (lambda d: d.update(trainer=[1, 2]), "trainer"),
    (lambda d: d["talker"].update(self_feed=1.5), r"talker\.self_feed must be in \[0, 1\]"),
    (lambda d: d["talker"].update(prev_dropout=1.0), r"talker\.prev_dropout must be in \[0, 1\)"),
    (lambda d: d["talker"].update(previous="none", self_feed=0.5), r"talker\.previous: none does not feed"),
    (lambda d: d["talker"].update(previous="none", prev_dropout=0.5), r"talker\.previous: none does not feed"),
    (lambda d: d["talker"].update(previous="frames"), r"talker"),
    (lambda d: d["synthesize"]["tts"].update(response_rate=40), r"response_rate"),
    (lambda d: d["acoustic_tis"].update(text_fraction=1.0), r"acoustic_tis\.text_fraction must be in \[0, 1\)"),
    (lambda d: d["acoustic_tis"].update(words_fraction=-0.1), r"acoustic_tis\.words_fraction must be within"),
])
def test_bad_params_name_the_key(tmp_path, change, match):
    with pytest.raises(ParamsError, match=match):
        load_params(_with(tmp_path, change))


def _leaves(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _leaves(v, prefix + (k,))
        else:
            out.append(prefix + (k,))
    return out


LEAVES = _leaves(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.mark.parametrize("key", LEAVES, ids=[".".join(k) for k in LEAVES])
def test_every_key_is_required(tmp_path, key):
    """Removing any setting from params.yaml is an error naming it, never a silent code default."""
    def drop(d):
        for k in key[:-1]:
            d = d[k]
        del d[key[-1]]

    with pytest.raises(ParamsError, match=r"lacks \['" + ".".join(key).replace(".", r"\.") + r"'\]"):
        load_params(_with(tmp_path, drop))


def test_overrides_merge_over_the_file():
    p = load_params(overrides={"text_tis": {"steps": 3}, "trainer": {"log_every": 1}})
    base = load_params()
    assert p.text_tis.steps == 3 and p.trainer.log_every == 1
    assert p.text_tis.lr == base.text_tis.lr and p.align == base.align


def test_on_off_switches_read_as_written(tmp_path):
    """YAML 1.1 reads a bare ``on`` / ``off`` as true / false: the auto | on | off switches take them as the words
    a user wrote (``model.keep_ear: off`` is off, not an error); anything else names the choices."""
    def write(d):
        d["model"]["keep_ear"] = "__KE__"
        d["align"]["adapter_phase"] = "__AP__"

    path = _with(tmp_path, write)
    text = path.read_text()
    path.write_text(text.replace("'__KE__'", "off").replace("__KE__", "off").replace("'__AP__'", "on")
                    .replace("__AP__", "on"))
    assert yaml.safe_load(path.read_text())["model"]["keep_ear"] is False  # what YAML made of it
    p = load_params(path)
    assert p.model.keep_ear == "off" and p.align.adapter_phase == "on"
    with pytest.raises(ParamsError, match=r"model.keep_ear: Input should be 'auto', 'on' or 'off'"):
        load_params(overrides={"model": {"keep_ear": "sometimes"}})

"""bench/bench_stage.py's settings: --set overrides reach the params as dvc exp run -S would set them."""

from __future__ import annotations

import pytest

from bench.bench_stage import overrides
from tasks.core.params import load_params


def test_set_overrides_are_nested_yaml_values_that_params_validate():
    o = overrides(["acoustic_tis.text_fraction=0", "text_tis.steps=1500", "schedule.mix=[[1, 9], [2, 8]]",
                   "text_tis.lr=5e-3"])
    assert o == {"acoustic_tis": {"text_fraction": 0}, "text_tis": {"steps": 1500, "lr": 5e-3},
                 "schedule": {"mix": [[1, 9], [2, 8]]}}
    p = load_params(overrides=o)
    assert p.text_tis.steps == 1500 and p.acoustic_tis.text_fraction == 0.0 and p.schedule.mix == ((1, 9), (2, 8))
    for bad in ("text_tis.steps", "=3", "text_tis.steps=1=2x"):
        if "=" not in bad or bad.startswith("="):
            with pytest.raises(SystemExit, match="key.path=value"):
                overrides([bad])
    with pytest.raises(SystemExit, match="set to a value above"):
        overrides(["a=1", "a.b=2"])

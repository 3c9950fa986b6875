"""Configs load one way: `load_config(spec, overrides)`."""

import pytest

from tip_jax.data.config import DataConfig
from tip_jax.errors import ConfigError
from tip_jax.experiment.config import load_config


def test_overrides_and_the_one_base_rule():
  c = load_config("configs/tip.py:tiny", {"optim.lr": 0.5, "mesh": {"data": 2}})
  assert c.optim.lr == 0.5 and dict(c.mesh) == {"data": 2}
  # A spec that names no base uses tiny, ablations included.
  assert load_config("configs/tip.py").name == "tiny"
  assert load_config("configs/tip.py:controlnet_sr").name == "tiny_controlnet_sr"
  # The data block is DataConfig's fields, so `DataConfig(**config.data)` always works.
  assert set(load_config("configs/tip.py:sd15").data) == set(DataConfig.__dataclass_fields__)


def test_unknown_fields_and_files_are_config_errors():
  with pytest.raises(ConfigError, match="no field 'optim.lrr'"):
    load_config("configs/tip.py:tiny", {"optim.lrr": 1.0})
  with pytest.raises(ConfigError, match="no such config file"):
    load_config("configs/nope.py:tiny")

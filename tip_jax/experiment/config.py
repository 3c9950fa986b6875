"""Experiment configs loaded one way, for the entry points, tests, benchmarks and notebooks.

    config = load_config("configs/tip.py:tiny", {"batch_size": 4, "data.resolution": 32})

A spec is a python file defining `get_config(arg)` (ml_collections), then `:arg`; the
same form `--config` takes on the command line. A relative path is read from the
working directory, else from the source checkout holding this package.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

import ml_collections

from tip_jax.errors import ConfigError

_CHECKOUT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _config_file(path: str) -> str:
  for candidate in (path, os.path.join(_CHECKOUT, path)):
    if os.path.isfile(candidate):
      return candidate
  raise ConfigError(f"{path}: no such config file")


def override(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
             ) -> ml_collections.ConfigDict:
  """Sets dotted keys ("optim.lr") in place; a dict value replaces a whole block. An
  unknown key is a `ConfigError` (a typo must not be silently ignored)."""
  for key, value in overrides.items():
    *parents, name = key.split(".")
    target = config
    for part in parents:
      if part not in target:
        raise ConfigError(f"config has no field {key!r}")
      target = target[part]
    if name not in target:
      raise ConfigError(f"config has no field {key!r}")
    target[name] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
  return config


def load_config(spec: str, overrides: Mapping[str, Any] | None = None
                ) -> ml_collections.ConfigDict:
  """`path/to/config.py[:arg]` → its `get_config(arg)` with `overrides` applied."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("tip_config", _config_file(path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  return override(config, overrides or {})

"""Experiment configs loaded one way, for the entry points, tests, benchmarks and notebooks.

    config = load_config("configs/tip.py:tiny", {"batch_size": 4, "data.resolution": 32})
    for spec, overrides in load_sweep("configs/tip.py:sd15", "sweep"): ...

A spec is a python file defining `get_config(arg)` (ml_collections), then `:arg`; the
same form `--config` takes on the command line. A relative path is read from the
working directory, else from the source checkout holding this package.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any, Mapping

import ml_collections

from tip_jax.errors import ConfigError

_CHECKOUT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _config_file(path: str) -> str:
  for candidate in (path, os.path.join(_CHECKOUT, path)):
    if os.path.isfile(candidate):
      return candidate
  raise ConfigError(f"{path}: no such config file")


def field_block(config: ml_collections.ConfigDict, key: str
                ) -> tuple[ml_collections.ConfigDict, str]:
  """The block holding a dotted key ("optim.lr" → (config.optim, "lr")); an unknown key
  is a `ConfigError` (a typo must not be silently ignored)."""
  *parents, name = key.split(".")
  target = config
  for part in parents:
    if not isinstance(target, ml_collections.ConfigDict) or part not in target:
      raise ConfigError(f"config has no field {key!r}")
    target = target[part]
  if not isinstance(target, ml_collections.ConfigDict) or name not in target:
    raise ConfigError(f"config has no field {key!r}")
  return target, name


def override(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
             ) -> ml_collections.ConfigDict:
  """Sets dotted keys ("optim.lr") in place; a dict value replaces a whole block."""
  for key, value in overrides.items():
    target, name = field_block(config, key)
    target[name] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
  return config


def _module(path: str) -> ModuleType:
  module_spec = importlib.util.spec_from_file_location("tip_config", _config_file(path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config(spec: str, overrides: Mapping[str, Any] | None = None
                ) -> ml_collections.ConfigDict:
  """`path/to/config.py[:arg]` → its `get_config(arg)` with `overrides` applied."""
  path, _, arg = spec.partition(":")
  module = _module(path)
  config = module.get_config(arg) if arg else module.get_config()
  return override(config, overrides or {})


def load_sweep(spec: str, function: str = "sweep") -> list[tuple[str, dict[str, Any]]]:
  """The points of a sweep the config file defines, each `(spec, overrides)` as
  `load_config` takes them.

  `function` names a function of the file that returns or yields dicts (kauldron's
  convention: `sweep`, `sweep_seeds`, ...): dotted field names to values, and optionally
  the key "config", config parts added to the spec's argument after a comma
  ("configs/tip.py:sd15" and {"config": "no_params"} give "configs/tip.py:sd15,no_params"),
  which is how a sweep reaches what `get_config` builds from its argument (the
  ablations). Every point is loaded here once, so a sweep with a typo fails before
  anything is launched.
  """
  path, _, arg = spec.partition(":")
  sweep = getattr(_module(path), function, None)
  if not callable(sweep):
    raise ConfigError(f"{path} defines no sweep function {function!r}")
  points = []
  for point in sweep():
    overrides = dict(point)
    parts = ",".join(p for p in (arg, str(overrides.pop("config", ""))) if p)
    point_spec = f"{path}:{parts}" if parts else path
    load_config(point_spec, overrides)
    points.append((point_spec, overrides))
  if not points:
    raise ConfigError(f"{path}: {function}() gives no points")
  return points

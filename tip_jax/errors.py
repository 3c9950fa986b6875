"""The errors a user can act on, one base class for the entry points to catch.

Each message is one line naming the thing at fault (a path, a key, a clause, a config
field). Entry points catch `TipError` only and print that line: any other exception is
a bug in tip_jax and keeps its traceback.
"""

from __future__ import annotations


class TipError(Exception):
  """Something the user gave (a file, a config, a prompt) that tip_jax cannot use."""


class CheckpointError(TipError):
  """A checkpoint or model folder that cannot be loaded."""


class ConfigError(TipError):
  """A config whose values cannot work together (mesh, batch, schedule, geometry)."""


class TrainingError(TipError):
  """A run that cannot go on: its steps stay non-finite, or its disk refuses writes."""


class DataError(TipError):
  """A data source or caption table that cannot be read."""


class PromptError(TipError):
  """A restoration prompt that does not parse."""


class ImageError(TipError):
  """An input that is not a readable image."""

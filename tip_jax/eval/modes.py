"""The evaluator's prompt modes: which c_s and c_r each example gets, and how it is sampled.

`evals.modes` names them, each (semantic, restoration[, options]); the paper's Tab. 1/5
rows are such modes scored on one checkpoint (README "Evaluation").
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import ml_collections

from tip_jax.degrade.prompts import BLIND_PROMPT
from tip_jax.diffusion.colorfix import METHODS
from tip_jax.errors import ConfigError
from tip_jax.eval import sets

SEMANTIC = ("caption", "")
RESTORATION = ("values", "type_only", "blind", "")
# Inference options a mode may set (`TIPRestorer.restore_batch` keywords): name -> type.
# `steps` (instead of evals.steps) keeps the paper's sampler, whose step count the paper
# does not give; the others depart from it (pure noise, no colour correction).
SAMPLER_OPTIONS = {"steps": int, "strength": float, "color_fix": str,
                   "control_scale": float, "restoration_guidance": float, "samples": int,
                   "color_fix_levels": int}
INPUT_MODE = "input"  # the degraded input scored as it is: the floor a model must beat


@dataclasses.dataclass(frozen=True)
class Mode:
  """A prompt mode of the paper's tables: which c_s and c_r each example gets, and
  optionally how it is sampled.

  semantic: "caption" (the set's caption) or "" (none).
  restoration: "values" (c_r with strengths), "type_only" (names only, the `no_params`
    rows), "blind" ("Remove all degradation") or "" (none).
  options: "" (the paper's sampler, evals.steps) or comma-separated SAMPLER_OPTIONS,
    e.g. "steps=1" (the paper's sampler, one step) or "strength=0.3,color_fix=wavelet"
    (a start from the input's noised latent and StableSR's colour fix): a mode's third
    element in `evals.modes`.
  """

  name: str
  semantic: str
  restoration: str
  options: str = ""

  def __post_init__(self):
    if self.semantic not in SEMANTIC or self.restoration not in RESTORATION:
      raise ConfigError(f"evals.modes.{self.name} = ({self.semantic!r}, {self.restoration!r}):"
                        f" semantic is one of {SEMANTIC}, restoration one of {RESTORATION}")
    self.sampler_options  # parsed (and checked) once, here

  @functools.cached_property
  def sampler_options(self) -> dict[str, Any]:
    """`options` as `restore_batch` keywords; a ConfigError names a bad one."""
    out = {}
    for item in filter(None, (part.strip() for part in self.options.split(","))):
      key, _, value = (part.strip() for part in item.partition("="))
      try:
        out[key] = SAMPLER_OPTIONS[key](value)
      except (KeyError, ValueError):
        out[key] = None
      if (out[key] in (None, "") or (key == "color_fix" and out[key] not in METHODS)
          or (key == "strength" and not 0 < out[key] <= 1)
          or (key in ("steps", "samples", "color_fix_levels") and out[key] < 1)):
        raise ConfigError(f"evals.modes.{self.name}: sampler option {item!r} is not "
                          f"name=value with a name in {sorted(SAMPLER_OPTIONS)} (color_fix "
                          f"one of {METHODS}, 0 < strength <= 1, steps, samples and "
                          "color_fix_levels >= 1)")
    return out

  def prompts(self, batch: sets.Batch) -> tuple[list[str], list[str]]:
    semantic = list(batch.captions) if self.semantic == "caption" else [""] * len(batch.ids)
    restoration = {"values": list(batch.restoration),
                   "type_only": list(batch.restoration_type_only),
                   "blind": [BLIND_PROMPT] * len(batch.ids),
                   "": [""] * len(batch.ids)}[self.restoration]
    return semantic, restoration


def modes(evals: ml_collections.ConfigDict) -> list[Mode]:
  out = []
  for name, spec in evals.modes.items():
    if name == INPUT_MODE:
      raise ConfigError(f"evals.modes: {INPUT_MODE!r} is reserved for the degraded input")
    if len(spec) not in (2, 3):
      raise ConfigError(f"evals.modes.{name}: expected (semantic, restoration[, options]), "
                        f"got {spec!r}")
    out.append(Mode(name, *spec))
  return out

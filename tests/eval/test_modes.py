"""Evaluator modes: prompts per mode and the sampler options a mode may add."""

import ml_collections
import pytest

from tip_jax.errors import ConfigError
from tip_jax.eval import modes


def test_a_mode_without_options_is_the_papers_sampler():
  assert modes.Mode("full", "caption", "values").sampler_options == {}


def test_options_become_restore_batch_keywords():
  mode = modes.Mode("fixed", "caption", "values",
                    "strength=0.3, color_fix=wavelet, steps=4, samples=8")
  assert mode.sampler_options == {"strength": 0.3, "color_fix": "wavelet", "steps": 4,
                                  "samples": 8}
  evals = ml_collections.ConfigDict({"modes": {
      "full": ("caption", "values"), "fixed": ("caption", "values", "control_scale=0.5")}})
  assert {m.name: m.sampler_options for m in modes.modes(evals)} == {
      "full": {}, "fixed": {"control_scale": 0.5}}


@pytest.mark.parametrize("options", ["sampler=dpm", "steps=0", "steps=1.5", "strength",
                                     "strength=high", "strength=1.5", "color_fix=median",
                                     "strength=0", "samples=0",
                                     "color_fix_levels=0"])
def test_a_bad_option_is_one_config_error_naming_it(options):
  with pytest.raises(ConfigError, match="evals.modes.m: sampler option"):
    modes.Mode("m", "caption", "values", options)


def test_a_mode_spec_has_two_or_three_parts():
  evals = ml_collections.ConfigDict({"modes": {"m": ("caption",)}})
  with pytest.raises(ConfigError, match="semantic, restoration"):
    modes.modes(evals)

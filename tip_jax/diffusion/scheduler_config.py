"""What we do with each key of a diffusers scheduler config: the one decision table.

A checkpoint folder ships one `scheduler_config.json` (SD 1.x: PNDM, SD 2.1: DDIM,
others Euler or DPM-Solver), while our sampler is picked by name. The reference for
sampler `s` is diffusers' `DDIMScheduler` / `DPMSolverMultistepScheduler.from_config`
of that same config, which reads the keys of its own class and ignores the rest; so a
key is judged for the sampler that runs, in `RULES`:

  scope ("schedule",)  ᾱ_t and the timestep layout, shared by training and every
                       sampler: checked by `Schedule.from_config`.
  scope (sampler, …)   read by those samplers' references only: checked when that
                       sampler's plan is made. A DPM-Solver config with solver_order=3
                       stays usable for DDIM, whose reference ignores the key too.
  scope ()             harmless: metadata, other schedulers' own options (PNDM's
                       skip_prk_steps, Euler's interpolation_type …), or options that only
                       act with a refused one (sample_max_value needs thresholding).

`values` lists the implemented values of a key (ANY: all of them); any other value is
refused with a ValueError naming key and value, never ignored. Keys in no row are read
by neither reference (tests check every __init__ argument of both is here) and are
dropped with a warning, as diffusers drops them.

Implemented beyond the SD defaults: every `prediction_type`, `timestep_spacing`,
`steps_offset`; DDIM's `clip_sample(_range)` and `set_alpha_to_one`; DPM-Solver's
`final_sigmas_type` zero / sigma_min, `lower_order_final` and `euler_at_final`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from absl import logging

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")
ANY = None
BOOLS = (True, False)


@dataclasses.dataclass(frozen=True)
class Rule:
  """One row: who reads the key, its value when absent, the values we implement."""

  scope: tuple[str, ...]
  default: Any = None            # diffusers' default of the readers' classes
  values: tuple | None = ANY     # implemented values


_SCHEDULE, _DDIM, _DPM = ("schedule",), ("ddim",), ("dpmpp_2m",)
_OFF = Rule(_DPM, False, (False,))
_HARMLESS = Rule(())

RULES: dict[str, Rule] = {
    "num_train_timesteps": Rule(_SCHEDULE, 1000),
    "beta_start": Rule(_SCHEDULE, 0.0001),
    "beta_end": Rule(_SCHEDULE, 0.02),
    "beta_schedule": Rule(_SCHEDULE, "linear", ("linear", "scaled_linear")),
    "trained_betas": Rule(_SCHEDULE, None, (None,)),
    "rescale_betas_zero_snr": Rule(_SCHEDULE, False, (False,)),
    "prediction_type": Rule(_SCHEDULE, "epsilon", PREDICTION_TYPES),
    # None: the sampler's own default (DDIM "leading", DPM-Solver "linspace")
    "timestep_spacing": Rule(_SCHEDULE, None, (None,) + SPACINGS),
    "steps_offset": Rule(_SCHEDULE, 0),
    "thresholding": Rule(_DDIM + _DPM, False, (False,)),
    # DDIM; an absent clip_sample clips x̂0 to ±1, as DDIMScheduler's default does
    "clip_sample": Rule(_DDIM, True, BOOLS),
    "clip_sample_range": Rule(_DDIM, 1.0),
    "set_alpha_to_one": Rule(_DDIM, True, BOOLS),
    # DPM-Solver++(2M); diffusers runs solver types logrho / bh1 / bh2 (DEIS's, UniPC's)
    # as midpoint, and so do we
    "solver_order": Rule(_DPM, 2, (2,)),
    "algorithm_type": Rule(_DPM, "dpmsolver++", ("dpmsolver++",)),
    "solver_type": Rule(_DPM, "midpoint", ("midpoint", "logrho", "bh1", "bh2")),
    "final_sigmas_type": Rule(_DPM, "zero", ("zero", "sigma_min")),
    "lower_order_final": Rule(_DPM, True, BOOLS),
    "euler_at_final": Rule(_DPM, False, BOOLS),
    "use_karras_sigmas": _OFF, "use_exponential_sigmas": _OFF, "use_beta_sigmas": _OFF,
    "use_lu_lambdas": _OFF, "use_flow_sigmas": _OFF,
    "lambda_min_clipped": Rule(_DPM, -math.inf, (-math.inf,)),
    # only "learned" / "learned_range" change DPM-Solver (they drop channels of ε̂)
    "variance_type": Rule(_DPM, None, (None, "fixed_small", "fixed_small_log", "fixed_large",
                                       "fixed_large_log")),
    # need thresholding / flow sigmas / a `mu` we never pass
    "dynamic_thresholding_ratio": _HARMLESS, "sample_max_value": _HARMLESS,
    "flow_shift": _HARMLESS, "use_dynamic_shifting": _HARMLESS, "time_shift_type": _HARMLESS,
    # other schedulers' own keys, and metadata
    "skip_prk_steps": _HARMLESS, "interpolation_type": _HARMLESS, "sigma_min": _HARMLESS,
    "sigma_max": _HARMLESS, "timestep_type": _HARMLESS, "_class_name": _HARMLESS,
    "_diffusers_version": _HARMLESS,
}


def resolve(config: Mapping[str, Any], reader: str) -> dict[str, Any]:
  """Every key `reader` ("schedule" or a sampler) reads: the config's value, else the
  default. Raises ValueError on the first value it does not implement."""
  out = {}
  for key, rule in RULES.items():
    if reader in rule.scope:
      value = config.get(key, rule.default)
      if rule.values is not ANY and value not in rule.values:
        who = "the noise schedule" if reader == "schedule" else f"the {reader} sampler"
        raise ValueError(f"scheduler config sets {key}={value!r}, which {who} does not "
                         f"implement (implemented: {', '.join(map(repr, rule.values))})")
      out[key] = value
  return out


def sampler_options(config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
  """The config's sampler-specific keys, sorted pairs (hashable: a static pytree field)."""
  unknown = sorted(set(config) - set(RULES))
  if unknown:
    logging.warning("scheduler config keys %s are read by neither DDIM's nor DPM-Solver's "
                    "diffusers reference; ignored", unknown)
  return tuple(sorted((key, value) for key, value in config.items()
                      if key in RULES and RULES[key].scope not in ((), _SCHEDULE)))

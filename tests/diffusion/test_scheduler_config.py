"""The scheduler-config decision table: complete against diffusers, and every refusal."""

import inspect
import math

import pytest

from tip_jax.diffusion import samplers, schedules
from tip_jax.diffusion.scheduler_config import ANY, RULES
from tip_jax.diffusion.schedules import Schedule

diffusers = pytest.importorskip("diffusers")

REFERENCES = {"ddim": diffusers.DDIMScheduler, "dpmpp_2m": diffusers.DPMSolverMultistepScheduler}


def _signature(cls) -> dict:
  return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
          if k != "self"}


def test_table_covers_both_references_with_their_defaults():
  """A new diffusers option fails here instead of being ignored silently."""
  assert {s for rule in RULES.values() for s in rule.scope} == {"schedule"} | set(REFERENCES)
  assert set(samplers.SAMPLERS) == set(REFERENCES)
  for sampler, cls in REFERENCES.items():
    for key, default in _signature(cls).items():
      assert key in RULES, f"{cls.__name__}.{key} is in no row of RULES"
      rule = RULES[key]
      if (sampler in rule.scope or "schedule" in rule.scope) and key != "timestep_spacing":
        assert rule.default == default, f"{key}: {rule.default!r} vs {cls.__name__}'s {default!r}"
        assert rule.values is ANY or default in rule.values, key


def _build(config: dict, reader: str):
  """What `reader` makes of `config`: the Schedule, or that sampler's plan."""
  schedule = Schedule.from_config(config)
  return schedule if reader == "schedule" else samplers.make_plan(schedule, 10, reader)


def _refusing(key: str, value, reader: str) -> None:
  with pytest.raises(ValueError, match=rf"^scheduler config sets {key}=.*{reader}") as e:
    _build({**schedules.sd_config(), key: value}, reader)
  assert "\n" not in str(e.value) and repr(value)[:20] in str(e.value)


REFUSED = [("beta_schedule", "squaredcos_cap_v2"), ("trained_betas", [1e-3] * 1000),
           ("rescale_betas_zero_snr", True), ("prediction_type", "flow_prediction"),
           ("timestep_spacing", "karras"), ("thresholding", True), ("solver_order", 1),
           ("solver_order", 3), ("algorithm_type", "dpmsolver"), ("algorithm_type", "deis"),
           ("algorithm_type", "sde-dpmsolver"), ("algorithm_type", "sde-dpmsolver++"),
           ("solver_type", "heun"), ("use_karras_sigmas", True),
           ("use_exponential_sigmas", True), ("use_beta_sigmas", True), ("use_lu_lambdas", True),
           ("use_flow_sigmas", True), ("lambda_min_clipped", -5.1), ("variance_type", "learned"),
           ("variance_type", "learned_range")]


@pytest.mark.parametrize("key,value", REFUSED)
def test_refused_values_name_key_and_value(key, value):
  """Refused where they change the result; a DPM-Solver-only option stays harmless for
  DDIM, as DDIMScheduler ignores it too."""
  rule = RULES[key]
  for reader in rule.scope:
    _refusing(key, value, reader)
  if "schedule" not in rule.scope:
    for sampler in set(REFERENCES) - set(rule.scope):
      _build({**schedules.sd_config(), key: value}, sampler)


@pytest.mark.parametrize("key", [k for k, rule in RULES.items() if rule.values is not ANY])
def test_every_restricted_key_refuses_an_unknown_value(key):
  for reader in RULES[key].scope:
    _refusing(key, "no-such-value", reader)


def test_harmless_and_unknown_keys_are_accepted():
  config = {**schedules.sd_config(), "_class_name": "PNDMScheduler", "skip_prk_steps": True,
            "sample_max_value": 2.0, "interpolation_type": "log_linear", "solver_p": None,
            "lambda_min_clipped": -math.inf}
  schedule = Schedule.from_config(config)
  assert dict(schedule.options) == {"clip_sample": False, "lambda_min_clipped": -math.inf,
                                    "set_alpha_to_one": False}
  for sampler in REFERENCES:
    samplers.make_plan(schedule, 10, sampler)

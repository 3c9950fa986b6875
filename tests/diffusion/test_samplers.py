"""Samplers vs diffusers' DDIM and DPM-Solver multistep schedulers: every step (ε, v), and
the full loop for every scheduler-config option value we accept."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tip_jax.diffusion import samplers, schedules
from tip_jax.diffusion.schedules import Schedule

diffusers = pytest.importorskip("diffusers")

REFERENCES = {"ddim": "DDIMScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler"}


def _fake_model(x, t, pattern, noise_gain, lib):
  """A stand-in for the UNet, written once for both frameworks, that depends on the latent
  and the timestep. For ε it is near the optimal ε̂ = σ_t·x of unit-variance data, so the
  latents stay O(1) as real ones do (a model far from any denoiser drives x̂0 to ~30)."""
  return noise_gain * x + 0.2 * lib.tanh(x) + 0.3 * lib.cos(t / 150.0 + pattern)


def _reference_steps(sampler, config, steps, x_T, pattern, gains, ours=None, start=0):
  """diffusers' latents after each step. Given `ours`, each step starts from *our*
  latent (x_T, then ours[i-1]), so a step's error is measured, not an accumulation
  (the multistep history is then built from our latents too); else it runs freely.
  `start` skips the first steps as diffusers' img2img pipelines do."""
  scheduler = getattr(diffusers, REFERENCES[sampler]).from_config(config)
  scheduler.set_timesteps(steps)
  if hasattr(scheduler, "set_begin_index"):
    scheduler.set_begin_index(start)
  timesteps = scheduler.timesteps[start:]
  x, out = torch.from_numpy(x_T), []
  for i, (t, gain) in enumerate(zip(timesteps, gains)):
    if ours is not None and i:
      x = torch.from_numpy(ours[i - 1].copy())
    m = _fake_model(x, t.to(torch.float32), torch.from_numpy(pattern), float(gain), torch)
    x = scheduler.step(m, t, x).prev_sample
    out.append(x.numpy())
  return timesteps.numpy(), np.stack(out)


@pytest.mark.parametrize("sampler", sorted(REFERENCES))
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps,spacing", [(10, None), (25, "trailing")])
def test_steps_match_diffusers(sampler, prediction, steps, spacing):
  config = schedules.sd_config(prediction)
  if spacing:
    config["timestep_spacing"] = spacing
  r = np.random.default_rng(0)
  x_T = r.standard_normal((1, 4, 8, 8), np.float32)   # NCHW; elementwise, layout-free
  pattern = r.uniform(0, 6, x_T.shape).astype(np.float32)
  schedule = Schedule.from_config(config)
  plan = samplers.make_plan(schedule, steps, sampler)
  gain = jnp.sqrt(1 - schedule.alphas_cumprod) * (prediction == "epsilon")

  def denoise(x, t):
    return _fake_model(x, t.astype(jnp.float32), pattern, gain[t], jnp)

  _, path = jax.jit(lambda x: samplers.sample(denoise, x, plan, trajectory=True))(x_T)
  path = np.asarray(path)
  gains = np.asarray(gain)[np.asarray(plan.timesteps)]
  ref_t, ref_path = _reference_steps(sampler, config, steps, x_T, pattern, gains, path)
  np.testing.assert_array_equal(np.asarray(plan.timesteps), ref_t)
  diff = np.abs(path - ref_path).max(axis=(1, 2, 3, 4))
  # measured worst step (float32, |x| < 3): 4.8e-7 (ddim), 7.2e-7 (dpmpp_2m), ε and v
  assert diff.max() <= 1e-5, f"per-step max abs diff {diff}"
  _, free = _reference_steps(sampler, config, steps, x_T, pattern, gains)
  # the whole run, each side on its own latents: measured <= 1.9e-6
  assert np.abs(path[-1] - free[-1]).max() <= 1e-5


UNSET = object()  # a case that leaves the key out of the config
# Full-loop cases per sampler: name -> keys over sd_config(); real configs of each class.
SD15_PNDM = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
             "steps_offset": 1, "trained_betas": None, "clip_sample": False}
EULER = {**SD15_PNDM, "_class_name": "EulerDiscreteScheduler", "final_sigmas_type": "zero",
         "interpolation_type": "linear", "prediction_type": "epsilon", "sample_max_value": 1.0,
         "rescale_betas_zero_snr": False, "sigma_max": None, "sigma_min": None,
         "timestep_spacing": "trailing", "timestep_type": "discrete", "use_beta_sigmas": False,
         "use_exponential_sigmas": False, "use_karras_sigmas": False}
DPM = {**SD15_PNDM, "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++",
       "dynamic_thresholding_ratio": 0.995, "euler_at_final": False, "final_sigmas_type": "zero",
       "lambda_min_clipped": -math.inf, "lower_order_final": True, "solver_order": 2,
       "solver_type": "midpoint", "thresholding": False, "use_karras_sigmas": False,
       "use_lu_lambdas": False, "variance_type": None, "timestep_spacing": "linspace"}
SHARED = {"eps": {}, "v": {"prediction_type": "v_prediction"}, "x0": {"prediction_type": "sample"},
          "leading": {"timestep_spacing": "leading"},
          "leading-offset0": {"timestep_spacing": "leading", "steps_offset": 0},
          "trailing": {"timestep_spacing": "trailing"}, "linspace": {"timestep_spacing": "linspace"},
          "sd15-pndm": SD15_PNDM, "sd21-ddim": {**SD15_PNDM, "_class_name": "DDIMScheduler",
                                                "prediction_type": "v_prediction"},
          "euler": EULER, "dpm": DPM}
OPTIONS = {
    "ddim": {**SHARED, "alpha-to-one": {"set_alpha_to_one": True},
             "clip": {"clip_sample": True}, "clip-0.5": {"clip_sample": True, "clip_sample_range": 0.5},
             "clip-unset": {"clip_sample": UNSET}},
    "dpmpp_2m": {**SHARED, "sigma-min": {"final_sigmas_type": "sigma_min"},
                 "sigma-min-v-trailing": {"final_sigmas_type": "sigma_min", "timestep_spacing":
                                          "trailing", "prediction_type": "v_prediction"},
                 "sigma-min-no-lower-final": {"final_sigmas_type": "sigma_min",
                                              "lower_order_final": False},
                 "sigma-min-euler-final": {"final_sigmas_type": "sigma_min", "euler_at_final": True},
                 "no-lower-final": {"lower_order_final": False},
                 "euler-final": {"euler_at_final": True},
                 "bh2": {"solver_type": "bh2", "variance_type": "fixed_small"}}}
CASES = [(sampler, name, steps) for sampler in sorted(OPTIONS) for name in OPTIONS[sampler]
         for steps in (10, 25)]


@jax.jit
def _run(plan, x_T, pattern, gain):
  denoise = lambda x, t: _fake_model(x, t.astype(jnp.float32), pattern, gain[t], jnp)  # noqa: E731
  return samplers.sample(denoise, x_T, plan, trajectory=True)[1]


def _max_diff_of_free_runs(sampler: str, name: str, steps: int, start: int = 0) -> float:
  """Ours and diffusers' loop (`from_config` of the same config, set_timesteps, step),
  all steps from the same x_T, each side on its own latents: max abs diff over the path."""
  config = {**schedules.sd_config(), **OPTIONS[sampler][name]}
  config = {k: v for k, v in config.items() if v is not UNSET}
  r = np.random.default_rng(steps)
  x_T = r.standard_normal((1, 4, 8, 8), np.float32)
  pattern = r.uniform(0, 6, x_T.shape).astype(np.float32)
  schedule = Schedule.from_config(config)
  plan = samplers.make_plan(schedule, steps, sampler, 1 - start / steps)
  gain = np.sqrt(1 - np.asarray(schedule.alphas_cumprod)) * (schedule.prediction_type == "epsilon")
  path = np.asarray(_run(plan, x_T, pattern, gain))
  ref_t, ref = _reference_steps(sampler, config, steps, x_T, pattern,
                                gain[np.asarray(plan.timesteps)], start=start)
  np.testing.assert_array_equal(np.asarray(plan.timesteps), ref_t)
  return np.abs(path - ref).max()


@pytest.mark.parametrize("sampler,name,steps", CASES)
def test_full_loop_matches_diffusers(sampler, name, steps):
  """Every option value we accept, 10 and 25 steps. Measured max abs diff over the
  whole trajectory (float32, |x| <= 4.4): <= 2.7e-6 (ddim), <= 3.9e-6 (dpmpp_2m)."""
  diff = _max_diff_of_free_runs(sampler, name, steps)
  assert diff <= 1e-5, f"max abs diff {diff:.2e}"


@pytest.mark.parametrize("sampler,name", [("ddim", "clip"), ("dpmpp_2m", "eps"),
                                          ("dpmpp_2m", "sigma-min"),
                                          ("dpmpp_2m", "sigma-min-no-lower-final")])
def test_tail_matches_diffusers_img2img(sampler, name):
  """strength < 1: the last 6 of 10 steps, as diffusers' img2img runs them (begin index;
  lower_order_final still counts all 10). Measured: <= 2.4e-6."""
  diff = _max_diff_of_free_runs(sampler, name, 10, start=4)
  assert diff <= 1e-5, f"max abs diff {diff:.2e}"


def test_clip_sample_is_honoured():
  config = dict(schedules.sd_config(), clip_sample=True, clip_sample_range=0.5)
  plan = samplers.ddim(Schedule.from_config(config), 4)
  assert plan.clip_x0 == 0.5
  x = samplers.sample(lambda x, t: jnp.zeros_like(x) + 50.0, jnp.full((1, 2), 3.0), plan)
  ref = diffusers.DDIMScheduler.from_config(config)
  ref.set_timesteps(4)
  xt = torch.full((1, 2), 3.0)
  for t in ref.timesteps:
    xt = ref.step(torch.full((1, 2), 50.0), t, xt).prev_sample
  np.testing.assert_allclose(np.asarray(x), xt.numpy(), atol=1e-4)


def test_unknown_sampler():
  with pytest.raises(ValueError, match="unknown sampler"):
    samplers.make_plan(Schedule.sd(), 10, "euler")


@pytest.mark.parametrize("sampler", sorted(REFERENCES))
def test_strength_runs_the_tail_and_restarts_the_solver(sampler):
  full = samplers.make_plan(Schedule.sd(), 20, sampler)
  tail = samplers.make_plan(Schedule.sd(), 20, sampler, strength=0.3)
  np.testing.assert_array_equal(tail.timesteps, full.timesteps[-6:])
  np.testing.assert_array_equal(tail.update[1:], full.update[-5:])
  assert tail.update[0, 2] == 0  # no x̂0 history on the first step run

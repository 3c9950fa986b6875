"""Samplers: every step of DDIM and DPM-Solver++(2M) vs diffusers, ε and v prediction."""

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


def _reference_steps(sampler, config, steps, x_T, pattern, gains, ours=None):
  """diffusers' latents after each step. Given `ours`, each step starts from *our*
  latent (x_T, then ours[i-1]), so a step's error is measured, not an accumulation
  (the multistep history is then built from our latents too); else it runs freely."""
  scheduler = getattr(diffusers, REFERENCES[sampler]).from_config(config)
  scheduler.set_timesteps(steps)
  x, out = torch.from_numpy(x_T), []
  for i, (t, gain) in enumerate(zip(scheduler.timesteps, gains)):
    if ours is not None and i:
      x = torch.from_numpy(ours[i - 1].copy())
    m = _fake_model(x, t.to(torch.float32), torch.from_numpy(pattern), float(gain), torch)
    x = scheduler.step(m, t, x).prev_sample
    out.append(x.numpy())
  return scheduler.timesteps.numpy(), np.stack(out)


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

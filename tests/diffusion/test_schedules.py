"""Noise schedule: ᾱ_t, forward noising, v targets and timestep spacing vs diffusers."""

import jax
import numpy as np
import pytest
import torch

from tip_jax.diffusion import schedules
from tip_jax.diffusion.schedules import Schedule

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("kind", ["scaled_linear", "linear"])
def test_alphas_cumprod_match_diffusers(kind):
  config = dict(schedules.sd_config(), beta_schedule=kind)
  ref = diffusers.DDIMScheduler.from_config(config).alphas_cumprod.numpy()
  ours = np.asarray(Schedule.from_config(config).alphas_cumprod)
  # measured: 4.8e-7 scaled_linear, 1.8e-7 linear (diffusers' float32 cumprod vs ours in float64, stored as float32)
  assert np.abs(ours - ref).max() <= 1e-6


def test_add_noise_and_v_target_match_diffusers(rng):
  schedule = Schedule.sd("v_prediction")
  ref = diffusers.DDPMScheduler.from_config(schedules.sd_config("v_prediction"))
  z0 = rng.standard_normal((3, 4, 4, 4), np.float32)
  noise = rng.standard_normal(z0.shape, np.float32)
  t = np.array([0, 499, 999])
  as_torch = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2))  # noqa: E731
  z_t = ref.add_noise(as_torch(z0), as_torch(noise), torch.from_numpy(t)).numpy()
  v = ref.get_velocity(as_torch(z0), as_torch(noise), torch.from_numpy(t)).numpy()
  ours_z_t = jax.jit(schedules.add_noise)(schedule, z0, noise, t)
  ours_v = schedules.training_target(schedule, z0, noise, t)
  # measured: 6.0e-7 for both (float32)
  assert np.abs(np.asarray(ours_z_t).transpose(0, 3, 1, 2) - z_t).max() <= 1e-5
  assert np.abs(np.asarray(ours_v).transpose(0, 3, 1, 2) - v).max() <= 1e-5
  assert schedules.training_target(schedule, z0, noise, t, "epsilon") is noise


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_timesteps_match_diffusers(spacing, steps):
  config = dict(schedules.sd_config(), timestep_spacing=spacing)
  schedule = Schedule.from_config(config)
  for cls, drop in ((diffusers.DDIMScheduler, False),
                    (diffusers.DPMSolverMultistepScheduler, True)):
    ref = cls.from_config(config)
    ref.set_timesteps(steps)
    ours = schedules.inference_timesteps(schedule, steps, spacing, drop_endpoint=drop)
    np.testing.assert_array_equal(ours, ref.timesteps.numpy(), err_msg=cls.__name__)


def test_bad_configs_are_refused():
  with pytest.raises(ValueError, match="beta_schedule"):
    Schedule.from_config({"beta_schedule": "squaredcos_cap_v2"})
  with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
    Schedule.from_config(dict(schedules.sd_config(), rescale_betas_zero_snr=True))
  with pytest.raises(ValueError, match="prediction_type"):
    Schedule.from_config({"prediction_type": "flow"})
  with pytest.raises(ValueError, match="steps"):
    schedules.inference_timesteps(Schedule.sd(), 0, "leading")


def test_a_v_prediction_output_is_read_as_its_epsilon():
  schedule = Schedule.sd()
  z0 = jax.random.normal(jax.random.key(0), (2, 4, 4, 4))
  noise = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
  for t in (10, 500, 999):
    tt = np.full((2,), t)
    zt = schedules.add_noise(schedule, z0, noise, tt)
    v = schedules.training_target(schedule, z0, noise, tt, "v_prediction")
    eps = schedules.predicted_noise(schedule, v, zt, tt, "v_prediction")
    assert float(np.abs(np.asarray(eps) - np.asarray(noise)).max()) < 1e-5
    assert schedules.predicted_noise(schedule, noise, zt, tt, "epsilon") is noise
  with pytest.raises(ValueError, match="sample"):
    schedules.predicted_noise(schedule, noise, zt, tt, "sample")

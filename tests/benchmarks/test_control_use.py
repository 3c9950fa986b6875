"""benchmarks/control_use.py: each timestep's ε-errors of the prior, the trivial guess
and the ControlNet with the true, another and the clean image, and the sampler's PSNRs,
on the embedded held-out set built on the fly."""

import numpy as np

from benchmarks import control_use
from tests.fixtures.checkpoint import tiny_checkpoint  # noqa: F401  (a fixture)
from tip_jax.diffusion.schedules import Schedule


def test_control_use_reports_every_row_at_every_timestep(tiny_checkpoint):  # noqa: F811
  result = control_use.measure(tiny_checkpoint, count=2, timesteps=(500, 999),
                               sample_steps=2, starts=(600,))
  assert result["images"] == 2 and result["set"].startswith("embedded_param_")
  a = np.asarray(Schedule.sd().alphas_cumprod)
  for t in (500, 999):
    row = result["eps_mse"][t]
    assert set(row) == {"x0_weight", "unet", "trivial", "copy_input", "tip", "shuffled",
                        "clean_hint"}
    assert abs(row["x0_weight"] - a[t] / (1 - a[t])) < 1e-4
    assert all(np.isfinite(v) and v >= 0 for v in row.values())
  # The trivial guess misses by sqrt(ᾱ/(1-ᾱ))·z0: its error grows as t falls.
  assert result["eps_mse"][500]["trivial"] > result["eps_mse"][999]["trivial"]
  # Copying the input's latent misses by sqrt(ᾱ/(1-ᾱ))·(z_y - z0): less than trivial's
  # sqrt(ᾱ/(1-ᾱ))·z0 unless the input's latent is further from z0 than 0 is.
  assert all(result["eps_mse"][t]["copy_input"] < result["eps_mse"][t]["trivial"]
             for t in (500, 999))
  assert set(result["psnr"]) == {"input", "vae_reconstruction", "vae_of_input",
                                 "vae_latent_noise", "ddim_from_noise", "ddim_from_noise_t600",
                                 "ddim_from_input_t600", "ddim_from_clean_t600",
                                 "prior_from_clean_t600"}
  assert all(np.isfinite(v) for v in result["psnr"].values())


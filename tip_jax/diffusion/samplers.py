"""Deterministic samplers as coefficient tables, run as one `lax.scan`.

DDIM (η = 0) and DPM-Solver++(2M) are both linear in the current latent x, the
model's x̂0 and ε̂, and (for 2M) the previous step's x̂0. So each sampler is written
once on the host, in float64, as a table of per-step coefficients (`Plan`), and one
scan body serves every sampler and prediction type:

    x̂0 = a·x + b·m            ε̂ = c·x + d·m            (m: the model output)
    x' = k_x·x + k_0·x̂0 + k_1·x̂0_prev + k_ε·ε̂

The denoiser — CFG, tiling, anything — is the caller's `denoise(x, t)`; the whole loop
compiles to one program. The step formulas follow Song et al. (DDIM, eq. 12) and
Lu et al. 2022 (DPM-Solver++, Alg. 2, with λ = log(α/σ)); timestep layouts and the
final-step conventions follow diffusers' `DDIMScheduler` and
`DPMSolverMultistepScheduler` defaults, which the tests compare against step by step.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from tip_jax.diffusion.schedules import Schedule, inference_timesteps

Array = jax.Array
Denoiser = Callable[[Array, Array], Array]


@struct.dataclass
class Plan:
  """Per-step tables of a sampler; leading axis = step, in sampling order."""

  timesteps: Array   # (S,) int32 model timesteps
  to_x0: Array       # (S, 2) a, b
  to_eps: Array      # (S, 2) c, d
  update: Array      # (S, 4) k_x, k_0, k_1, k_ε
  clip_x0: float | None = struct.field(pytree_node=False, default=None)

  @property
  def steps(self) -> int:
    return self.timesteps.shape[0]


def _conversions(alpha: np.ndarray, sigma: np.ndarray, prediction: str
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(a, b), (c, d) per step from α_t = sqrt(ᾱ_t), σ_t = sqrt(1-ᾱ_t)."""
  one, zero = np.ones_like(alpha), np.zeros_like(alpha)
  if prediction == "epsilon":
    x0, eps = (1 / alpha, -sigma / alpha), (zero, one)
  elif prediction == "v_prediction":
    x0, eps = (alpha, -sigma), (sigma, alpha)
  elif prediction == "sample":
    x0, eps = (zero, one), (1 / sigma, -alpha / sigma)
  else:
    raise ValueError(f"unknown prediction_type {prediction!r}")
  return np.stack(x0, -1), np.stack(eps, -1)


def _plan(t: np.ndarray, alpha_bar: np.ndarray, prediction: str, update: np.ndarray,
          clip: float | None = None) -> Plan:
  to_x0, to_eps = _conversions(np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar), prediction)
  f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  return Plan(timesteps=jnp.asarray(t, jnp.int32), to_x0=f32(to_x0), to_eps=f32(to_eps),
              update=f32(update), clip_x0=clip)


def ddim(schedule: Schedule, steps: int, start: int = 0) -> Plan:
  """DDIM, η = 0: x' = sqrt(ᾱ_prev)·x̂0 + sqrt(1-ᾱ_prev)·ε̂.

  The previous timestep is t - T//steps whatever the spacing (as diffusers); below 0
  it is ᾱ = 1 with `set_alpha_to_one`, else ᾱ_0. x̂0 is clipped when the config asks.
  `start` skips the first steps of the `steps`-step layout (img2img-style starts).
  """
  options = schedule.sampler_options("ddim")
  ac = np.asarray(schedule.alphas_cumprod, np.float64)
  t = inference_timesteps(schedule, steps, schedule.timestep_spacing or "leading")[start:]
  prev = t - schedule.num_train_timesteps // steps
  final = 1.0 if options["set_alpha_to_one"] else ac[0]
  ac_prev = np.where(prev >= 0, ac[np.maximum(prev, 0)], final)
  zero = np.zeros_like(ac_prev)
  update = np.stack([zero, np.sqrt(ac_prev), zero, np.sqrt(1 - ac_prev)], -1)
  clip = float(options["clip_sample_range"]) if options["clip_sample"] else None
  return _plan(t, ac[t], schedule.prediction_type, update, clip)


def dpm_solver_pp_2m(schedule: Schedule, steps: int, start: int = 0) -> Plan:
  """DPM-Solver++(2M): multistep, second order in λ, data (x̂0) prediction.

  The first step run is first order (no history yet). The last one lands on σ = 0 and
  returns x̂0 itself (final_sigmas_type="zero", diffusers' default), or on the noise
  level of t = 0 ("sigma_min"); it is first order — what keeps few-step sampling
  stable — with "zero", with euler_at_final, or with lower_order_final below 15 steps,
  the rule of diffusers' `DPMSolverMultistepScheduler.step`. `start` as in `ddim`.
  """
  options = schedule.sampler_options("dpmpp_2m")
  ac = np.asarray(schedule.alphas_cumprod, np.float64)
  t = inference_timesteps(schedule, steps, schedule.timestep_spacing or "linspace",
                          drop_endpoint=True)[start:]
  alpha, sigma = np.sqrt(ac[t]), np.sqrt(1 - ac[t])
  ac_end = ac[0] if options["final_sigmas_type"] == "sigma_min" else 1.0
  alpha_next = np.append(alpha[1:], np.sqrt(ac_end))
  sigma_next = np.append(sigma[1:], np.sqrt(1 - ac_end))
  # exp(-h) = exp(λ_s - λ_t) = (σ_t/α_t) / (σ_s/α_s): finite even when σ_t = 0
  decay = (sigma_next / alpha_next) / (sigma / alpha)
  h = -np.log(np.maximum(decay, 1e-300))
  first_order_last = (options["final_sigmas_type"] == "zero" or options["euler_at_final"]
                      or (options["lower_order_final"] and steps < 15))
  rows = []
  for i in range(len(t)):
    base = alpha_next[i] * (1 - decay[i])
    if i == 0 or (i == len(t) - 1 and first_order_last):
      rows.append((sigma_next[i] / sigma[i], base, 0.0, 0.0))
    else:
      r = h[i - 1] / h[i]
      rows.append((sigma_next[i] / sigma[i], base * (1 + 0.5 / r), -base * 0.5 / r, 0.0))
  return _plan(t, ac[t], schedule.prediction_type, np.asarray(rows))


SAMPLERS: dict[str, Callable[[Schedule, int, int], Plan]] = {
    "ddim": ddim, "dpmpp_2m": dpm_solver_pp_2m}


def make_plan(schedule: Schedule, steps: int, sampler: str = "ddim", strength: float = 1.0
              ) -> Plan:
  """The plan of `sampler`; with strength < 1 only the last round(strength·steps) steps
  run (the caller starts them from its latent noised to `plan.timesteps[0]`)."""
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {sorted(SAMPLERS)}")
  if not 0.0 < strength <= 1.0:
    raise ValueError(f"strength must be in (0, 1], got {strength}")
  run = max(1, min(steps, int(round(strength * steps))))
  return SAMPLERS[sampler](schedule, steps, steps - run)


def sample(denoise: Denoiser, x_T: Array, plan: Plan, trajectory: bool = False
           ) -> Array | tuple[Array, Array]:
  """Runs all steps from noise x_T; returns the final latent (and, with `trajectory`,
  the (S, ...) latents after each step, for step-by-step checks and previews).

  `denoise(x, t)` gets the current latent and a scalar int32 timestep and returns the
  model output (ε̂, v̂ or x̂0 — whatever the schedule's prediction type says).
  """

  def body(carry, step):
    x, x0_prev = carry
    t, to_x0, to_eps, k = step
    m = denoise(x, t).astype(x.dtype)
    x0 = to_x0[0] * x + to_x0[1] * m
    if plan.clip_x0 is not None:
      x0 = jnp.clip(x0, -plan.clip_x0, plan.clip_x0)
    eps = to_eps[0] * x + to_eps[1] * m
    x_next = k[0] * x + k[1] * x0 + k[2] * x0_prev + k[3] * eps
    return (x_next, x0), (x_next if trajectory else None)

  (x, _), path = lax.scan(body, (x_T, jnp.zeros_like(x_T)),
                          (plan.timesteps, plan.to_x0, plan.to_eps, plan.update))
  return (x, path) if trajectory else x

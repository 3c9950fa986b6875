"""The discrete noise schedule of a latent diffusion model (DDPM's ᾱ_t), shared by the
trainer (`add_noise`, `training_target`) and the samplers (`inference_timesteps`).

Built from a diffusers `scheduler_config.json`, so a checkpoint's own schedule is used
as it was trained. β's are computed in float64 and ᾱ stored in float32: the float32
cumulative product diffusers uses differs from it by < 1e-6, far below the parity bound.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from tip_jax.diffusion import scheduler_config
from tip_jax.diffusion.scheduler_config import PREDICTION_TYPES, SPACINGS

Array = jax.Array


@struct.dataclass
class Schedule:
  """ᾱ_t for t = 0..T-1 plus the sampling options of the config it came from.

  A pytree: `alphas_cumprod` is the only array leaf, so a Schedule can be an argument
  of a jitted step; everything else is static. `timestep_spacing` is None when the
  config leaves it to the sampler (diffusers' DDIM defaults to "leading",
  DPM-Solver to "linspace"). `options` keeps the config's sampler-specific keys
  unjudged: only the sampler that runs knows which of them matter.
  """

  alphas_cumprod: Array
  prediction_type: str = struct.field(pytree_node=False, default="epsilon")
  timestep_spacing: str | None = struct.field(pytree_node=False, default=None)
  steps_offset: int = struct.field(pytree_node=False, default=0)
  options: tuple[tuple[str, Any], ...] = struct.field(pytree_node=False, default=())

  @property
  def num_train_timesteps(self) -> int:
    return self.alphas_cumprod.shape[0]

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> Schedule:
    """From a diffusers scheduler config of any class (they share the schedule keys).

    Refuses schedule keys we do not implement; the sampler-specific ones are checked by
    the sampler that runs (`sampler_options`), see `scheduler_config` for the table.
    """
    s = scheduler_config.resolve(config, "schedule")
    betas = _betas(s["beta_schedule"], s["num_train_timesteps"], s["beta_start"], s["beta_end"])
    return cls(alphas_cumprod=jnp.asarray(np.cumprod(1.0 - betas), jnp.float32),
               prediction_type=s["prediction_type"], timestep_spacing=s["timestep_spacing"],
               steps_offset=int(s["steps_offset"]),
               options=scheduler_config.sampler_options(config))

  def sampler_options(self, sampler: str) -> dict[str, Any]:
    """The options `sampler` reads (the config's value, else diffusers' default);
    ValueError, naming key and value, for one it does not implement."""
    return scheduler_config.resolve(dict(self.options), sampler)

  @classmethod
  def sd(cls, prediction_type: str = "epsilon") -> Schedule:
    """Stable Diffusion 1.x / 2.x training schedule."""
    return cls.from_config(sd_config(prediction_type))


def sd_config(prediction_type: str = "epsilon") -> dict:
  """The scheduler config SD 1.5 / 2.1 ship (as a dict, for tiny test backbones too)."""
  return {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
          "beta_schedule": "scaled_linear", "prediction_type": prediction_type,
          "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}


def _betas(kind: str, n: int, start: float, end: float) -> np.ndarray:
  if kind == "scaled_linear":  # linear in sqrt(β): LDM's schedule
    return np.linspace(start ** 0.5, end ** 0.5, n, dtype=np.float64) ** 2
  return np.linspace(start, end, n, dtype=np.float64)  # "linear", the only other one allowed


def _at(schedule: Schedule, t: Array, like: Array) -> tuple[Array, Array]:
  """sqrt(ᾱ_t), sqrt(1-ᾱ_t) per example, shaped to broadcast against `like` (B, ...)."""
  a = schedule.alphas_cumprod[jnp.asarray(t)]
  a = a.reshape(a.shape + (1,) * (like.ndim - a.ndim))
  return jnp.sqrt(a).astype(like.dtype), jnp.sqrt(1.0 - a).astype(like.dtype)


def add_noise(schedule: Schedule, z0: Array, noise: Array, t: Array) -> Array:
  """z_t = sqrt(ᾱ_t)·z0 + sqrt(1-ᾱ_t)·ε; `t` is an int array of shape (B,) (or scalar)."""
  a, s = _at(schedule, t, z0)
  return a * z0 + s * noise


def training_target(schedule: Schedule, z0: Array, noise: Array, t: Array,
                    prediction_type: str | None = None) -> Array:
  """What the denoiser regresses: ε, v = sqrt(ᾱ_t)·ε - sqrt(1-ᾱ_t)·z0, or z0 itself."""
  prediction_type = prediction_type or schedule.prediction_type
  if prediction_type == "epsilon":
    return noise
  if prediction_type == "v_prediction":
    a, s = _at(schedule, t, z0)
    return a * noise - s * z0
  if prediction_type == "sample":
    return z0
  raise ValueError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")


def predicted_noise(schedule: Schedule, prediction: Array, z_t: Array, t: Array,
                    prediction_type: str | None = None) -> Array:
  """The ε a denoiser's output implies at z_t: itself, or from v (`training_target`'s)
  ε = sqrt(1-ᾱ_t)·z_t + sqrt(ᾱ_t)·v."""
  prediction_type = prediction_type or schedule.prediction_type
  if prediction_type == "epsilon":
    return prediction
  if prediction_type == "v_prediction":
    a, s = _at(schedule, t, z_t)
    return s * z_t + a * prediction
  raise ValueError(f"prediction_type {prediction_type!r}: ε is read from epsilon and "
                   "v_prediction outputs")


def inference_timesteps(schedule: Schedule, steps: int, spacing: str,
                        drop_endpoint: bool = False) -> np.ndarray:
  """The `steps` training timesteps a sampler visits, descending (int64, host-side).

  `spacing` follows Table 2 of Lin et al. 2023 ("Common diffusion noise schedules and
  sample steps are flawed"): leading = multiples of a stride (+ steps_offset),
  trailing = ends at T-1, linspace = evenly spread over [0, T-1]. DPM-Solver lays out
  steps+1 points for leading/linspace and drops the lowest (`drop_endpoint`), DDIM lays
  out exactly `steps`; each sampler keeps its reference's convention.
  """
  n = schedule.num_train_timesteps
  if not 1 <= steps <= n:
    raise ValueError(f"steps must be in [1, {n}], got {steps}")
  k = steps + int(drop_endpoint)
  if spacing == "trailing":
    t = np.round(np.arange(n, 0, -n / steps)) - 1
  elif spacing == "leading":
    t = np.arange(k)[::-1] * (n // k) + schedule.steps_offset
  elif spacing == "linspace":
    t = np.round(np.linspace(0, n - 1, k))[::-1]
  else:
    raise ValueError(f"timestep_spacing {spacing!r} is not one of {SPACINGS}")
  return t[:steps].astype(np.int64)

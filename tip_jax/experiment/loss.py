"""TIP's denoising loss as pure functions of (params, frozen params, batch).

`device_batch` turns the host's numpy batch into the model's inputs on device
(degrade x → y, scale both to [-1, 1], one PRNG key per example); `loss_fn` is the
ε- (or v-) prediction MSE of the frozen UNet steered by the ControlNet. The trainer
differentiates `loss_fn`; the evaluator calls it as is for a validation loss.
`noised_latents` (VAE posterior sample → z_t, t, target) is the part the UNet's
pretraining loss (`tip_jax.experiment.pretrain`) shares.

Every random draw of an example is keyed by (seed, step, record index), never by its
position in the batch: the same example gets the same noise whatever the batch order,
micro-batch split, device count or host count, which is what lets a two-host run be
compared with a one-host run of the same global batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from tip_jax.degrade import DegradeConfig, degrade_sharded, params_from_tree
from tip_jax.degrade.pipeline import mix_per_step
from tip_jax.degrade.prompts import BLIND_PROMPT
from tip_jax.diffusion.schedules import Schedule, add_noise, training_target
from tip_jax.experiment.components import Components
from tip_jax.models import tip
from tip_jax.models.backbone import Backbone
from tip_jax.models.tokenizer import tokenize

Batch = dict[str, Any]
# What the host sends to the device each step (strings and host-side counters stay behind).
DEVICE_KEYS = ("image", "semantic_ids", "restoration_ids", "degrade", "index")


_MIX_STREAM = 0x6D6978  # separates the per-step pipeline draw from the examples' keys


def example_keys(seed: int, step: jax.Array, index: jax.Array) -> jax.Array:
  """One PRNG key per example from (seed, step, record index)."""
  base = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index.astype(jnp.uint32))


def device_batch(batch: Batch, step: jax.Array, *, seed: int, degrade_config: DegradeConfig,
                 mesh: Mesh, batch_axes: tuple[str, ...], blind_ids: jax.Array) -> Batch:
  """A pipeline batch (`DEVICE_KEYS`) → `loss_fn`'s inputs: clean and degraded images in
  [-1, 1] (degraded on device, each device its own rows), prompt ids, per-example keys.

  With `degrade_config.mix="step"` the whole batch is Real-ESRGAN-degraded at the
  (seed, step)-drawn steps, and its restoration prompts become `blind_ids` (the
  tokenized blind prompt, `blind_prompt_ids`)."""
  clean = batch["image"].astype(jnp.float32) / 255.0
  step_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _MIX_STREAM), step)
  params, blind = mix_per_step(params_from_tree(batch["degrade"], degrade_config), step_key)
  degraded = degrade_sharded(clean, params, mesh, batch_axes)
  restoration_ids = jnp.where(blind, blind_ids, batch["restoration_ids"])
  return {"clean": clean * 2 - 1, "degraded": degraded * 2 - 1,
          "semantic_ids": batch["semantic_ids"], "restoration_ids": restoration_ids,
          "keys": example_keys(seed, step, batch["index"])}


def host_batch(batch: Batch, keys: tuple[str, ...] = DEVICE_KEYS
               ) -> tuple[Batch, dict[str, np.ndarray]]:
  """Splits a pipeline batch into what goes to device (`keys`: what the task's step
  reads) and per-batch data-pipeline counts."""
  device = {k: batch[k] for k in keys}
  device["index"] = np.asarray(device["index"], np.int32)  # JAX runs without 64-bit ints
  stats = {f"data/{k}": np.asarray(v).sum() for k, v in batch.get("stats", {}).items()}
  return device, stats


def blind_prompt_ids(models: Components) -> jax.Array:
  """(1, 77) CLIP ids of the blind prompt, for `device_batch`."""
  return jnp.asarray(tokenize(models.backbone.tokenizer, [BLIND_PROMPT]))


def encode_prompts(models: Components, frozen: dict, ids: jax.Array,
                   enabled: bool) -> jax.Array:
  """CLIP states of prompt ids; a prompt kind the config turns off is "" for every example
  (the ControlNet-SR ablation sees no prompts)."""
  if not enabled:
    empty = jnp.asarray(tokenize(models.backbone.tokenizer, [""]))
    ids = jnp.broadcast_to(empty, ids.shape)
  return models.backbone.text_encoder.module.apply({"params": frozen["text_encoder"]}, ids)


# How a training step draws each example's timestep t in [0, T):
#   uniform  every t alike: Stable Diffusion's (LDM's) loss, the paper's; the default.
#   cubic    t = floor((1 - u³)·T), u uniform (T2I-Adapter's non-uniform sampling):
#            79% of draws in the noisier half. The ε-loss of a t near T hardly
#            depends on x0 (its weight on the x0 error is ᾱ_t/(1-ᾱ_t) < 0.01 past
#            t = 900 on SD's schedule), so a uniformly trained ControlNet learns
#            its control at middle t and steers the first, layout-setting steps of
#            a sampler little; drawing those t more often teaches them.
TIMESTEPS = ("uniform", "cubic")


def draw_timestep(key: jax.Array, num_train_timesteps: int, sampling: str = "uniform"
                  ) -> jax.Array:
  """One int32 timestep, drawn as `sampling` (one of TIMESTEPS) says."""
  if sampling == "uniform":
    return jax.random.randint(key, (), 0, num_train_timesteps)
  if sampling == "cubic":
    u = jax.random.uniform(key, (), jnp.float32)
    t = jnp.floor((1.0 - u ** 3) * num_train_timesteps).astype(jnp.int32)
    return jnp.minimum(t, num_train_timesteps - 1)
  raise ValueError(f"timestep sampling {sampling!r}: expected one of {TIMESTEPS}")


# How each example's squared error is weighted:
#   none            the plain MSE on the backbone's target (ε or v): SD's, the paper's.
#   truncated_snr   max(x0-space error, ε-space error), Salimans & Ho's "truncated SNR"
#                   weighting: ε-loss × max(1, 1/SNR_t). On SD's schedule 1/SNR passes 1
#                   at t = 354 and is 214 at t = 999, so errors in the clean image
#                   the ControlNet should read from the degraded one count at the
#                   noisy steps too, where the plain ε-loss barely sees them.
WEIGHTINGS = ("none", "truncated_snr")


def loss_weights(schedule: Schedule, t: jax.Array, prediction_type: str,
                 weighting: str = "none") -> jax.Array:
  """Per-example weights (B,) on the squared error of `prediction_type`'s target."""
  if weighting == "none":
    return jnp.ones(t.shape, jnp.float32)
  if weighting != "truncated_snr":
    raise ValueError(f"loss weighting {weighting!r}: expected one of {WEIGHTINGS}")
  a = schedule.alphas_cumprod[t].astype(jnp.float32)
  # max(ε-loss, x0-loss) in the target's own units: x0 err² = ε err²·(1-ᾱ)/ᾱ and
  # v err² = ε err²/ᾱ (for the same x̂0), so the weight on ε is max(1, (1-ᾱ)/ᾱ) and on v
  # max(ᾱ, 1-ᾱ).
  if prediction_type == "epsilon":
    return jnp.maximum(1.0, (1.0 - a) / a)
  if prediction_type == "v_prediction":
    return jnp.maximum(a, 1.0 - a)
  raise ValueError(f"loss weighting {weighting!r} is defined for epsilon and v_prediction "
                   f"backbones, not {prediction_type!r}")


def noised_latents(backbone: Backbone, vae_params: dict, clean: jax.Array, keys: jax.Array,
                   schedule: Schedule, timesteps: str = "uniform"
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(z_t, t, target) of a denoising loss: clean images in [-1, 1] → a VAE posterior
  sample, scaled → noised at a t drawn as `timesteps` says (`TIMESTEPS`); the target is
  ε (or v, as the backbone predicts). `keys`: one per example (`example_keys`)."""
  vae = backbone.vae.module
  keys = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
  mean, logvar = vae.apply({"params": vae_params}, clean.astype(vae.options.dtype),
                           method="encode")
  posterior = jax.vmap(lambda k, s: jax.random.normal(k, s, jnp.float32), (0, None))(
      keys[:, 0], mean.shape[1:])
  z0 = mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * posterior
  z0 = vae.config.scale(z0)
  t = jax.vmap(lambda k: draw_timestep(k, schedule.num_train_timesteps, timesteps))(keys[:, 1])
  noise = jax.vmap(lambda k: jax.random.normal(k, z0.shape[1:], jnp.float32))(keys[:, 2])
  z_t = add_noise(schedule, z0, noise, t)
  return z_t, t, training_target(schedule, z0, noise, t, backbone.prediction_type)


def loss_fn(params: dict, frozen: dict, batch: Batch, *, models: Components,
            schedule: Schedule, prompts: ml_collections.ConfigDict,
            timesteps: str = "uniform", weighting: str = "none") -> jax.Array:
  """Mean squared error of the TIP prediction against ε (or v) on `batch`.

  params: the ControlNet's (trainable); frozen: `Backbone.params`, placed; batch: from
  `device_batch`; prompts: `config.prompts` (which prompt kinds the models see);
  timesteps: how t is drawn (`TIMESTEPS`, `config.loss.timesteps`); weighting: each
  example's weight (`WEIGHTINGS`, `config.loss.weighting`).
  """
  backbone = models.backbone
  unet = backbone.unet.module
  z_t, t, target = noised_latents(backbone, frozen["vae"], batch["clean"], batch["keys"],
                                  schedule, timesteps)
  e_s = encode_prompts(models, frozen, batch["semantic_ids"], prompts.semantic)
  e_r = encode_prompts(models, frozen, batch["restoration_ids"], prompts.restoration)
  dtype = unet.options.dtype
  pred = tip.predict(unet, models.controlnet, frozen["unet"], params, z_t.astype(dtype), t,
                     e_s, e_r, batch["degraded"].astype(dtype))
  error = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=(1, 2, 3))
  if weighting == "none":  # the plain mean, bit for bit as before the option
    return jnp.mean(error)
  return jnp.mean(loss_weights(schedule, t, backbone.prediction_type, weighting) * error)

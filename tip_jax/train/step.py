"""One TIP training step, a pure function of (state, frozen params, batch).

Everything after the host's numpy batch happens here, on device and under one jit:
degrade x → y, VAE-encode x, draw t and ε, CLIP-encode both prompts, predict with
the frozen UNet + trainable ControlNet, MSE against ε (or v), AdamW + EMA.

Every random draw of an example is keyed by (seed, step, record index), never by its
position in the batch: the same example gets the same noise whatever the batch order,
micro-batch split, device count or host count, which is what lets a two-host run be
compared with a one-host run of the same global batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from tip_jax.data.pipeline import degrade_params
from tip_jax.degrade import DegradeConfig, degrade_sharded
from tip_jax.diffusion.schedules import Schedule, add_noise, training_target
from tip_jax.models import tip
from tip_jax.models.tokenizer import tokenize
from tip_jax.train import state as state_lib
from tip_jax.train.components import Components

Batch = dict[str, Any]
# What the host sends to the device each step (strings and host-side counters stay behind).
DEVICE_KEYS = ("image", "semantic_ids", "restoration_ids", "degrade", "index")


def _example_keys(seed: int, step: jax.Array, index: jax.Array) -> jax.Array:
  base = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index.astype(jnp.uint32))


def _micro_batches(tree: Any, n: int) -> Any:
  """(B, ...) → (n, B/n, ...) taking every n-th example, so each device's rows split evenly."""
  def split(x):
    return jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, tree)


def make_train_step(components: Components, config: ml_collections.ConfigDict,
                    tx: optax.GradientTransformation, mesh: Mesh, degrade_config: DegradeConfig,
                    batch_axes: tuple[str, ...]) -> Callable:
  """The step as a pure function `(state, frozen, batch) -> (state, metrics)`."""
  c = components
  schedule = Schedule.from_config(c.scheduler_config)
  prediction = c.prediction_type
  lr = state_lib.learning_rate(config.optim, config.total_steps)
  accum = int(config.grad_accum_steps)
  empty_ids = jnp.asarray(tokenize(c.tokenizer, [""]))

  def encode_text(frozen, ids, enabled):
    if not enabled:  # the ControlNet-SR ablation: every prompt is ""
      ids = jnp.broadcast_to(empty_ids, ids.shape)
    return c.text_encoder.apply({"params": frozen["text_encoder"]}, ids)

  def micro_loss(params, frozen, micro):
    keys = jax.vmap(lambda k: jax.random.split(k, 3))(micro["keys"])
    x = micro["clean"].astype(c.vae.options.dtype)
    mean, logvar = c.vae.apply({"params": frozen["vae"]}, x, method="encode")
    posterior = jax.vmap(lambda k, s: jax.random.normal(k, s, jnp.float32), (0, None))(
        keys[:, 0], mean.shape[1:])
    z0 = (mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * posterior)
    z0 = z0 * c.scaling_factor
    t = jax.vmap(lambda k: jax.random.randint(k, (), 0, schedule.num_train_timesteps))(keys[:, 1])
    noise = jax.vmap(lambda k: jax.random.normal(k, z0.shape[1:], jnp.float32))(keys[:, 2])
    z_t = add_noise(schedule, z0, noise, t)
    target = training_target(schedule, z0, noise, t, prediction)
    e_s = encode_text(frozen, micro["semantic_ids"], config.prompts.semantic)
    e_r = encode_text(frozen, micro["restoration_ids"], config.prompts.restoration)
    dtype = c.unet.options.dtype
    pred = tip.predict(c.unet, c.controlnet, frozen["unet"], params, z_t.astype(dtype), t,
                       e_s, e_r, micro["degraded"].astype(dtype))
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target))

  grad_fn = jax.value_and_grad(micro_loss)

  def train_step(state: state_lib.TrainState, frozen: dict, batch: Batch):
    clean = batch["image"].astype(jnp.float32) / 255.0
    degraded = degrade_sharded(clean, degrade_params(batch["degrade"], degrade_config), mesh,
                               batch_axes)
    data = {"clean": clean * 2 - 1, "degraded": degraded * 2 - 1,
            "semantic_ids": batch["semantic_ids"], "restoration_ids": batch["restoration_ids"],
            "keys": _example_keys(config.seed, state.step, batch["index"])}

    def accumulate(carry, micro):
      loss, grads = grad_fn(state.params, frozen, micro)
      return jax.tree.map(jnp.add, carry, (loss, grads)), None

    if accum == 1:
      # No loop: inside a `scan`, XLA:CPU computes the E' conv weight gradients with a
      # generic kernel, which made the whole step 3.5x slower (benchmarks/train_step.py).
      loss, grads = grad_fn(state.params, frozen, data)
    else:
      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
      (loss, grads), _ = jax.lax.scan(accumulate, zeros, _micro_batches(data, accum))
      loss, grads = jax.tree.map(lambda x: x / accum, (loss, grads))
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state_lib.apply_gradients(state, grads, tx, config.ema_decay, finite)
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr(state.step),
               "skipped_steps": new_state.skipped}
    return new_state, metrics

  return train_step


def host_batch(batch: Batch) -> tuple[Batch, dict[str, np.ndarray]]:
  """Splits a pipeline batch into what goes to device and per-batch data-pipeline counts."""
  device = {k: batch[k] for k in DEVICE_KEYS}
  device["index"] = np.asarray(device["index"], np.int32)  # JAX runs without 64-bit ints
  stats = {f"data/{k}": np.asarray(v).sum() for k, v in batch.get("stats", {}).items()}
  return device, stats

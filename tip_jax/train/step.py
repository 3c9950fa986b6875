"""One TIP training step, a pure function of (state, frozen params, batch).

Everything after the host's numpy batch happens here, on device and under one jit:
`loss.device_batch` (degrade x → y, per-example keys), the gradient of `loss.loss_fn`
(optionally accumulated over micro-batches), global-norm clipping, AdamW and EMA; a
non-finite loss or gradient skips the update and is counted.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from tip_jax.degrade import DegradeConfig
from tip_jax.experiment import loss as loss_lib
from tip_jax.experiment import state as state_lib
from tip_jax.experiment.components import Components

Batch = loss_lib.Batch


def _micro_batches(tree: Any, n: int) -> Any:
  """(B, ...) → (n, B/n, ...) taking every n-th example, so each device's rows split evenly."""
  def split(x):
    return jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, tree)


def make_train_step(components: Components, config: ml_collections.ConfigDict,
                    tx: optax.GradientTransformation, mesh: Mesh, degrade_config: DegradeConfig,
                    batch_axes: tuple[str, ...]) -> Callable:
  """The step as a pure function `(state, frozen, batch) -> (state, metrics)`."""
  lr = state_lib.learning_rate(config.optim, config.total_steps)
  accum = int(config.grad_accum_steps)
  grad_fn = jax.value_and_grad(functools.partial(
      loss_lib.loss_fn, models=components, schedule=components.backbone.schedule(),
      prompts=config.prompts))

  blind_ids = loss_lib.blind_prompt_ids(components)

  def train_step(state: state_lib.TrainState, frozen: dict, batch: Batch):
    data = loss_lib.device_batch(batch, state.step, seed=config.seed,
                                 degrade_config=degrade_config, mesh=mesh,
                                 batch_axes=batch_axes, blind_ids=blind_ids)

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

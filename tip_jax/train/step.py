"""One training step, a pure function of (state, frozen params, batch), for any task.

Everything after the host's numpy batch happens here, on device and under one jit: the
task's `prepare` (TIP: degrade x → y; every task: per-example keys), the gradient of
its loss (optionally accumulated over micro-batches), global-norm clipping, AdamW and
EMA; a non-finite loss or gradient skips the update and is counted. The loss's logged
parts (the VAE's L1, LPIPS and KL) join the metrics.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from tip_jax.experiment import loss as loss_lib
from tip_jax.experiment import state as state_lib
from tip_jax.experiment.tasks import Task

Batch = loss_lib.Batch


def _micro_batches(tree: Any, n: int) -> Any:
  """(B, ...) → (n, B/n, ...) taking every n-th example, so each device's rows split evenly."""
  def split(x):
    return jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, tree)


def make_train_step(task: Task, config: ml_collections.ConfigDict,
                    tx: optax.GradientTransformation) -> Callable:
  """The step as a pure function `(state, frozen, batch) -> (state, metrics)`."""
  lr = state_lib.learning_rate(config.optim, config.total_steps)
  accum = int(config.grad_accum_steps)
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)

  def train_step(state: state_lib.TrainState, frozen: dict, batch: Batch):
    data = task.prepare(batch, state.step)

    def accumulate(carry, micro):
      (loss, parts), grads = grad_fn(state.params, frozen, micro)
      return jax.tree.map(jnp.add, carry, (loss, parts, grads)), None

    if accum == 1:
      # No loop: inside a `scan`, XLA:CPU computes the E' conv weight gradients with a
      # generic kernel, which made the whole step 3.5x slower (benchmarks/train_step.py).
      (loss, parts), grads = grad_fn(state.params, frozen, data)
    else:
      micro = _micro_batches(data, accum)
      shapes = jax.eval_shape(grad_fn, state.params, frozen,
                              jax.tree.map(lambda x: x[0], micro))
      (loss, parts), grads = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      (loss, parts, grads), _ = jax.lax.scan(accumulate, (loss, parts, grads), micro)
      loss, parts, grads = jax.tree.map(lambda x: x / accum, (loss, parts, grads))
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state_lib.apply_gradients(state, grads, tx, config.ema_decay, finite)
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr(state.step),
               "skipped_steps": new_state.skipped, **parts}
    return new_state, metrics

  return train_step

"""The trainable state: the task's params (TIP: the ControlNet, E' and fusion convs
included; pretraining: the VAE or the UNet), AdamW, EMA.

The frozen params are not part of it: they are passed to the step separately, never
differentiated, never donated and never checkpointed.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from tip_jax.errors import ConfigError
from tip_jax.experiment import sharding
from tip_jax.models import params as params_lib

PyTree = Any


@struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: updates applied or skipped so far
  params: PyTree
  opt_state: PyTree
  ema_params: PyTree
  skipped: jax.Array       # int32 scalar: steps whose loss or gradient was not finite


def learning_rate(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `optim.lr`, then constant or cosine down to 0."""
  warmup = max(int(optim.warmup_steps), 0)
  if optim.schedule == "constant":
    after = optax.constant_schedule(optim.lr)
  elif optim.schedule == "cosine":
    after = optax.cosine_decay_schedule(optim.lr, max(total_steps - warmup, 1))
  else:
    raise ConfigError(f"optim.schedule={optim.schedule!r}: expected 'constant' or 'cosine'")
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, optim.lr, warmup), after], [warmup])


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = config.optim
  return optax.chain(
      optax.clip_by_global_norm(o.clip_norm) if o.clip_norm else optax.identity(),
      optax.adamw(learning_rate(o, config.total_steps), b1=o.b1, b2=o.b2,
                  weight_decay=o.weight_decay))


def create(params: PyTree, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=jax.tree.map(jnp.copy, params),
                    skipped=jnp.zeros((), jnp.int32))


def apply_gradients(state: TrainState, grads: PyTree, tx: optax.GradientTransformation,
                    ema_decay: float, finite: jax.Array) -> TrainState:
  """One optimizer + EMA update, or only `step` and `skipped` advance when not `finite`."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, params)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  return TrainState(step=state.step + 1, params=keep(params, state.params),
                    opt_state=keep(opt_state, state.opt_state),
                    ema_params=keep(ema, state.ema_params),
                    skipped=state.skipped + (~finite).astype(jnp.int32))


def state_shardings(module: nn.Module, tx: optax.GradientTransformation, mesh: Any,
                    rules: sharding.Rules) -> Any:
  """Shardings of the whole TrainState of `module`'s params: optimizer moments and EMA
  follow their params."""
  boxed = params_lib.abstract_params(module)
  return sharding.param_shardings(jax.eval_shape(lambda p: create(p, tx), boxed), mesh, rules)


def abstract_state(module: nn.Module, tx: optax.GradientTransformation,
                   shardings: Any) -> Any:
  """The TrainState as ShapeDtypeStructs placed as `shardings` (for restore and AOT)."""
  shapes = jax.eval_shape(lambda p: create(p, tx), params_lib.param_shapes(module))
  return sharding.abstract(shapes, shardings)

"""The training loop: mesh → models → data → sharded state → compiled step → loop.

One linear function, read top to bottom. Everything numeric happens in
`tip_jax.train.step`; this file places arrays, moves data, keeps time, writes
metrics and checkpoints, and stops cleanly on SIGTERM or TPU preemption.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from tip_jax.data import pipeline as data_lib
from tip_jax.models import params as params_lib
from tip_jax.train import checkpoint as ckpt_lib
from tip_jax.train import components as components_lib
from tip_jax.train import samples, sharding
from tip_jax.train import state as state_lib
from tip_jax.train import step as step_lib

RULES = {"fsdp": sharding.FSDP_RULES, "tensor": sharding.TENSOR_RULES}


class _StopFlag:
  """Set by SIGTERM; the loop saves the current step and returns (exit status 0)."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d: will save and stop after the current step", signum)
    self.requested = True

  def agreed(self) -> bool:
    """True on every process once any process got the signal (all must save together)."""
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.int32(self.requested)).any())


def state_shardings(controlnet: nn.Module, tx: Any, mesh: Any, rules: Any) -> Any:
  """Shardings of the whole TrainState: optimizer moments and EMA follow their params."""
  boxed = params_lib.abstract_params(controlnet)
  abstract = jax.eval_shape(lambda p: state_lib.create(p, tx), boxed)
  return sharding.param_shardings(abstract, mesh, rules)


def abstract_state(controlnet: nn.Module, tx: Any, shardings: Any) -> Any:
  shapes = jax.eval_shape(lambda p: state_lib.create(p, tx), params_lib.param_shapes(controlnet))
  return sharding.abstract(shapes, shardings)


def frozen_shardings(comps: components_lib.Components, mesh: Any, rules: Any) -> dict:
  modules = {"unet": comps.unet, "vae": comps.vae, "text_encoder": comps.text_encoder}
  return {k: sharding.param_shardings(params_lib.abstract_params(m), mesh, rules)
          for k, m in modules.items()}


def place(tree: Any, shardings: Any) -> Any:
  """Host arrays (equal on every process) → global arrays laid out as `shardings`."""
  def one(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  return jax.tree.map(one, tree, shardings)


def global_batch(local: Any, mesh: Any, rules: Any) -> Any:
  """Each process's rows → one global array per leaf, split over the batch axes."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding.batch_sharding(mesh, rules, np.ndim(x)), np.asarray(x)), local)


def _check_batch(config: ml_collections.ConfigDict, mesh: Any) -> int:
  per_host = config.batch_size // jax.process_count()
  batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
  for what, n in (("processes", jax.process_count()), ("data x fsdp devices", batch_devices),
                  ("grad_accum_steps x data x fsdp devices",
                   batch_devices * config.grad_accum_steps)):
    if config.batch_size % n:
      raise ValueError(f"batch_size {config.batch_size} is not divisible by {what} ({n})")
  return per_host


def _log_compiled(compiled: Any, seconds: float) -> None:
  logging.info("train step compiled in %.1f s", seconds)
  memory = compiled.memory_analysis()
  if memory is not None:
    logging.info("per-device memory: arguments %.1f MiB, outputs %.1f MiB, temporaries "
                 "%.1f MiB", memory.argument_size_in_bytes / 2**20,
                 memory.output_size_in_bytes / 2**20, memory.temp_size_in_bytes / 2**20)


def train(config: ml_collections.ConfigDict, workdir: str,
          devices: Sequence[jax.Device] | None = None) -> state_lib.TrainState:
  """Trains to `config.total_steps` (resuming from `workdir`), returns the final state.

  `devices` (default: all) is what the config's mesh spans.
  """
  # ---- Mesh, models and the frozen backbone.
  mesh = sharding.make_mesh(dict(config.mesh), devices)
  rules = RULES[config.sharding_rules]
  logging.info("mesh %s on %d processes", dict(mesh.shape), jax.process_count())
  per_host = _check_batch(config, mesh)
  comps = components_lib.build(config)
  dtype = components_lib.model_options(config).dtype
  frozen_sh = frozen_shardings(comps, mesh, rules)
  frozen = place(components_lib.cast(comps.frozen, dtype), frozen_sh)
  tx = state_lib.optimizer(config)
  state_sh = state_shardings(comps.controlnet, tx, mesh, rules)

  # ---- Data, checkpoints, state (fresh or resumed).
  degrade_config = components_lib.degrade_config(config)
  data_iter = data_lib.make_iterator(
      data_lib.DataConfig(**config.data), batch_size=per_host, seed=config.seed,
      degrade_config=degrade_config, tokenizer=comps.tokenizer)
  mngr = ckpt_lib.manager(workdir, config)
  latest = mngr.latest_step()
  if latest is not None:
    logging.info("resuming from step %d in %s", latest, ckpt_lib.directory(workdir))
    state = ckpt_lib.restore(mngr, latest, abstract_state(comps.controlnet, tx, state_sh),
                             data_iter)
  else:
    params = components_lib.init_controlnet(comps, config.seed)
    state = jax.jit(lambda p: state_lib.create(p, tx), out_shardings=state_sh)(
        place(params, state_sh.params))
  step = int(jax.device_get(state.step))

  # ---- The step, compiled once ahead of time.
  batch_axes = tuple(dict(rules)["batch"])
  step_fn = step_lib.make_train_step(comps, config, tx, mesh, degrade_config, batch_axes)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_hparams({k: str(v) for k, v in config.to_dict().items()
                        if not isinstance(v, dict)})
  hooks = []
  if jax.process_index() == 0:
    hooks.append(periodic_actions.ReportProgress(num_train_steps=config.total_steps,
                                                 writer=writer))
    if config.profile_steps:
      hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=config.profile_steps,
                                            first_profile=step + config.log_every_steps))
  grids = (samples.SampleGrids(comps, config, degrade_config, writer, workdir)
           if config.sample_every_steps else None)
  stop = _StopFlag()
  compiled = None
  history: list[dict] = []
  data_counts: dict[str, float] = {}
  interval_start, interval_step = time.perf_counter(), step

  # ---- The loop.
  while step < config.total_steps:
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      local, stats = step_lib.host_batch(next(data_iter))
      for k, v in stats.items():
        data_counts[k] = data_counts.get(k, 0) + float(v)
      batch = global_batch(local, mesh, rules)
      if compiled is None:
        start = time.perf_counter()
        batch_sh = jax.tree.map(lambda x: x.sharding, batch)
        compiled = jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, batch_sh),
                           out_shardings=(state_sh, None), donate_argnums=(0,)
                           ).lower(state, frozen, batch).compile()
        _log_compiled(compiled, time.perf_counter() - start)
        if jax.process_count() > 1:
          # Hosts finish compiling at different times; gloo gives a late peer only ~30 s
          # at the first collective, the coordination service's barrier waits longer.
          ocp.multihost.sync_global_processes("tip_train_step_compiled", timeout=3600)
        interval_start = time.perf_counter()
      state, metrics = compiled(state, frozen, batch)
      step += 1
    history.append(metrics)
    for hook in hooks:
      hook(step)

    if step % config.log_every_steps == 0 or step == config.total_steps:
      values = jax.device_get(history)
      elapsed = time.perf_counter() - interval_start
      scalars = {k: float(np.mean([h[k] for h in values])) for k in values[0]}
      scalars["skipped_steps"] = float(values[-1]["skipped_steps"])
      scalars["steps_per_s"] = (step - interval_step) / elapsed
      scalars["images_per_s"] = scalars["steps_per_s"] * config.batch_size
      scalars.update(data_counts)
      writer.write_scalars(step, scalars)
      history, interval_start, interval_step = [], time.perf_counter(), step

    if grids and (step % config.sample_every_steps == 0 or step == config.total_steps):
      grids(step, state.ema_params)
      interval_start = time.perf_counter()  # steps/s counts training only

    stopping = mngr.reached_preemption(step) or stop.agreed()
    if step % config.checkpoint_every_steps == 0 or step == config.total_steps or stopping:
      ckpt_lib.save(mngr, step, state, data_iter, config, force=True)
    if stopping:
      logging.warning("stopping at step %d (checkpoint saved)", step)
      break

  mngr.wait_until_finished()
  if step >= config.total_steps:
    ckpt_lib.mark_complete(workdir, step)
  writer.flush()
  mngr.close()
  data_iter.close()  # stops Grain's worker processes and frees their shared memory
  return state

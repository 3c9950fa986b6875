"""`setup(config, workdir)`: everything a job builds before its loop, shared by trainer,
evaluator and restorer: the mesh and sharding rules, the models, the task (what is
trained, `tip_jax.experiment.tasks`) with the frozen params it reads placed on the mesh,
the optimizer and the TrainState's shardings, the degradation and data settings, and
the checkpoint manager of `workdir`."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import jax
import ml_collections
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh

from tip_jax.data import pipeline as data_lib
from tip_jax.data.config import DataConfig
from tip_jax.degrade import DegradeConfig
from tip_jax.errors import ConfigError
from tip_jax.experiment import checkpoint as ckpt_lib
from tip_jax.experiment import components as components_lib
from tip_jax.experiment import sharding
from tip_jax.experiment import state as state_lib
from tip_jax.experiment import tasks as tasks_lib


@dataclasses.dataclass
class Experiment:
  """A config made concrete on a set of devices (see the module docstring)."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: Mesh
  rules: sharding.Rules
  components: components_lib.Components
  task: tasks_lib.Task
  frozen: dict                 # what the task's loss reads, placed: backbone params in the
  frozen_shardings: dict       # compute dtype (`task.frozen_parts`), then `task.extra_frozen`
  tx: optax.GradientTransformation
  state_shardings: Any         # of the whole TrainState
  degrade_config: DegradeConfig
  per_host_batch: int

  @property
  def batch_axes(self) -> tuple[str, ...]:
    return sharding.batch_axes(self.rules)

  def abstract_state(self) -> state_lib.TrainState:
    return state_lib.abstract_state(self.task.module, self.tx, self.state_shardings)

  def init_state(self) -> state_lib.TrainState:
    """A fresh TrainState, created sharded, from the task's initial params (TIP: the
    ControlNet copied from the frozen UNet)."""
    params = self.task.initial_params()
    return jax.jit(lambda p: state_lib.create(p, self.tx), out_shardings=self.state_shardings)(
        sharding.place(params, self.state_shardings.params))

  def data_iterator(self, data: DataConfig | None = None, *, seed: int | None = None,
                    batch_size: int | None = None, **shard: int) -> grain.DatasetIterator:
    """This process's batches of `data` (default: the config's training data);
    `shard` = process_index, process_count to read another share."""
    return data_lib.make_iterator(
        data or DataConfig(**self.config.data), batch_size=batch_size or self.per_host_batch,
        seed=self.config.seed if seed is None else seed, degrade_config=self.degrade_config,
        tokenizer=self.components.backbone.tokenizer, **shard)

  def checkpoint_manager(self, read_only: bool = False) -> ocp.CheckpointManager:
    return ckpt_lib.manager(self.workdir, self.config, read_only=read_only)

  def global_batch(self, local: Any) -> Any:
    return sharding.global_batch(local, self.mesh, self.rules)


def check_batch(config: ml_collections.ConfigDict, mesh: Mesh) -> int:
  """The per-process batch; a global batch that the processes, the batch-sharded devices
  or the micro-batches do not divide is a `ConfigError`."""
  batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
  for what, n in (("processes", jax.process_count()), ("data x fsdp devices", batch_devices),
                  ("grad_accum_steps x data x fsdp devices",
                   batch_devices * config.grad_accum_steps)):
    if config.batch_size % n:
      raise ConfigError(f"batch_size {config.batch_size} is not divisible by {what} ({n})")
  return config.batch_size // jax.process_count()


def setup(config: ml_collections.ConfigDict, workdir: str,
          devices: Sequence[jax.Device] | None = None) -> Experiment:
  """Builds the experiment on `devices` (default: all) as the config's mesh says."""
  mesh = sharding.make_mesh(dict(config.mesh), devices)
  rules = sharding.rule_set(config.sharding_rules)
  logging.info("mesh %s on %d processes", dict(mesh.shape), jax.process_count())
  per_host = check_batch(config, mesh)
  comps = components_lib.build(config)
  degrade_config = components_lib.degrade_config(config)
  task = tasks_lib.build(config, comps, mesh, sharding.batch_axes(rules), degrade_config)
  dtype = components_lib.model_options(config).dtype
  parts = {k: comps.backbone.params[k] for k in task.frozen_parts}
  frozen_sh = {**sharding.frozen_shardings(comps.backbone, mesh, rules, task.frozen_parts),
               **sharding.replicated(task.extra_frozen, mesh)}
  frozen = sharding.place({**components_lib.cast(parts, dtype), **task.extra_frozen}, frozen_sh)
  tx = state_lib.optimizer(config)
  return Experiment(config=config, workdir=workdir, mesh=mesh, rules=rules, components=comps,
                    task=task, frozen=frozen, frozen_shardings=frozen_sh, tx=tx,
                    state_shardings=state_lib.state_shardings(task.module, tx, mesh, rules),
                    degrade_config=degrade_config, per_host_batch=per_host)

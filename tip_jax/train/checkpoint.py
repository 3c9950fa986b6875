"""Checkpoints in `workdir/checkpoints`, shared by the trainer, the evaluator and inference.

One Orbax `CheckpointManager`, three items per step:
  state   the `TrainState` (ControlNet params, AdamW state, EMA params, step, skips)
  data    the Grain iterator's position (one JSON file per process)
  config  the experiment config as JSON, so a checkpoint alone rebuilds its models
The frozen backbone is referenced by the config (`model.backbone` folder, or a random
backbone that is a function of the seed), never re-saved. After the final save the
trainer writes `checkpoints/train_complete` holding the last step: an evaluator that
polls the folder knows when to stop.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from tip_jax.convert.diffusers import Backbone, CheckpointError
from tip_jax.degrade import DegradeConfig
from tip_jax.models import params as params_lib
from tip_jax.models.controlnet import ControlNetModel
from tip_jax.train import components as components_lib
from tip_jax.train import sharding
from tip_jax.train import state as state_lib

ITEMS = ("state", "data", "config")
COMPLETE = "train_complete"


def directory(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def manager(workdir: str, config: ml_collections.ConfigDict | None = None,
            read_only: bool = False) -> ocp.CheckpointManager:
  """The manager for `workdir`; a config sets the retention and async policy."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints if config else None,
      keep_period=(config.keep_every_steps or None) if config else None,
      enable_async_checkpointing=bool(config.async_checkpoints) if config else False,
      read_only=read_only, create=not read_only)
  return ocp.CheckpointManager(directory(workdir), item_names=ITEMS, options=options,
                               item_handlers={"data": grain.checkpoint.CheckpointHandler()})


def save(mngr: ocp.CheckpointManager, step: int, state: state_lib.TrainState,
         data_iterator: Any, config: ml_collections.ConfigDict, force: bool = False) -> bool:
  return mngr.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iterator),
      config=ocp.args.JsonSave(config.to_dict())))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any,
            data_iterator: Any) -> state_lib.TrainState:
  """Restores `state` (placed as `abstract_state`'s shardings say) and the iterator in place."""
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  return restored["state"]


def mark_complete(workdir: str, step: int) -> None:
  if jax.process_index() == 0:
    epath.Path(directory(workdir), COMPLETE).write_text(str(step))


def is_complete(workdir: str) -> bool:
  return epath.Path(directory(workdir), COMPLETE).exists()


@dataclasses.dataclass
class Trained:
  """What inference needs from a training run."""

  config: ml_collections.ConfigDict
  step: int
  backbone: Backbone
  controlnet: ControlNetModel
  controlnet_params: dict
  resolution: int
  degrade_config: DegradeConfig


def _checkpoint_root(path: str) -> str:
  """Accepts a workdir, its `checkpoints` folder, or a step folder inside it."""
  p = epath.Path(path)
  if not p.exists():
    raise CheckpointError(f"{path}: no such checkpoint folder")
  if (p / "checkpoints").is_dir():
    return str(p / "checkpoints")
  if (p / "config").is_dir() and (p / "state").is_dir():
    return str(p.parent)
  return str(p)


def load_for_inference(path: str, step: int | None = None, use_ema: bool = True,
                       backbone: str | None = None) -> Trained:
  """A trained TIP (EMA params by default) with its backbone, on the default device.

  `backbone` overrides the folder the config names, for checkpoints moved between
  machines. Raises `CheckpointError` with one line for anything that is not such a run.
  """
  root = _checkpoint_root(path)
  if path.rstrip("/").split("/")[-1].isdigit() and step is None:
    step = int(path.rstrip("/").split("/")[-1])
  mngr = ocp.CheckpointManager(root, item_names=ITEMS,
                               options=ocp.CheckpointManagerOptions(read_only=True))
  steps = mngr.all_steps()
  if not steps:
    raise CheckpointError(f"{path}: no TIP checkpoints in {root}")
  step = mngr.latest_step() if step is None else step
  if step not in steps:
    raise CheckpointError(f"{path}: no checkpoint for step {step} (have {sorted(steps)})")
  config = ml_collections.ConfigDict(
      mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])
  if backbone is not None:
    config.model.backbone = backbone
  comps = components_lib.build(config)
  tx = state_lib.optimizer(config)
  shapes = jax.eval_shape(lambda p: state_lib.create(p, tx),
                          params_lib.param_shapes(comps.controlnet))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = sharding.abstract(shapes, jax.tree.map(lambda _: device, shapes))
  state = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]
  mngr.close()
  params = state.ema_params if use_ema else state.params
  return Trained(config=config, step=int(step), backbone=comps.backbone(),
                 controlnet=comps.controlnet,
                 controlnet_params=params, resolution=int(config.data.resolution),
                 degrade_config=components_lib.degrade_config(config))

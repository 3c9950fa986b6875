"""Checkpoints in `workdir/checkpoints`, shared by the trainer, the evaluator and the restorer.

One Orbax `CheckpointManager`; each step holds one item per role, so a job restores
only what it needs (the restorer and the evaluator: `ema_params`, onto their own
devices; the trainer: everything):
  params       the params being trained: the ControlNet's (E' and fusion convs included),
               or, for a pretraining run (`config.task` vae | unet), the VAE's or UNet's
  ema_params   their exponential moving average: what inference uses
  opt_state    AdamW's state, with `step` and `skipped` (the counters of `TrainState`)
  data         the Grain iterator's position (one JSON file per process)
  config       the experiment config as JSON, so a checkpoint alone rebuilds its models
The frozen backbone is referenced by the config (`model.backbone` folder, or a random
backbone that is a function of the seed), never re-saved. After the final save the
trainer writes `checkpoints/train_complete` holding the last step; `checkpoints()`
is how an evaluator follows a running trainer and knows when to stop.
`load_for_inference` reads a TIP run for restoring, `load_pretrained_backbone` a
pretraining run and `load_estimator` an estimator run for `tip-export-backbone`.

Checkpoints written before this layout (one `state` item) are not read: nothing had
been released with it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterator

import flax.linen as nn
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from tip_jax.degrade import DegradeConfig
from tip_jax.errors import CheckpointError
from tip_jax.experiment import components as components_lib
from tip_jax.experiment import sharding
from tip_jax.experiment import state as state_lib
from tip_jax.experiment import tasks as tasks_lib
from tip_jax.models import params as params_lib
from tip_jax.models.backbone import Backbone
from tip_jax.models.controlnet import ControlNetModel

ITEMS = ("params", "ema_params", "opt_state", "data", "config")
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
  return _manager(directory(workdir), options)


def _manager(root: str, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(root, item_names=ITEMS, options=options,
                               item_handlers={"data": grain.checkpoint.CheckpointHandler()})


def _counters(state: state_lib.TrainState) -> dict:
  return {"opt_state": state.opt_state, "step": state.step, "skipped": state.skipped}


def save(mngr: ocp.CheckpointManager, step: int, state: state_lib.TrainState,
         data_iterator: Any, config: ml_collections.ConfigDict, force: bool = False) -> bool:
  return mngr.save(step, force=force, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      ema_params=ocp.args.StandardSave(state.ema_params),
      opt_state=ocp.args.StandardSave(_counters(state)),
      data=grain.checkpoint.CheckpointSave(data_iterator),
      config=ocp.args.JsonSave(config.to_dict())))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: state_lib.TrainState,
            data_iterator: Any) -> state_lib.TrainState:
  """The whole TrainState (placed as `abstract_state`'s shardings say); the iterator
  continues in place."""
  a = abstract_state
  restored = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(a.params),
      ema_params=ocp.args.StandardRestore(a.ema_params),
      opt_state=ocp.args.StandardRestore(_counters(a)),
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  counters = restored["opt_state"]
  return state_lib.TrainState(step=counters["step"], params=restored["params"],
                              opt_state=counters["opt_state"],
                              ema_params=restored["ema_params"], skipped=counters["skipped"])


def mark_complete(workdir: str, step: int) -> None:
  if jax.process_index() == 0:
    epath.Path(directory(workdir), COMPLETE).write_text(str(step))


def is_complete(workdir: str) -> bool:
  return epath.Path(directory(workdir), COMPLETE).exists()


def checkpoints(workdir: str, after_step: int | None = None, poll_s: float = 30.0,
                timeout_s: float | None = None) -> Iterator[int]:
  """Finished checkpoint steps of `workdir`, in order, as they appear; ends once
  `train_complete` is written and every step up to it was yielded, or when no new
  checkpoint came for `timeout_s` seconds (None = wait forever).

  What an evaluator job polls with; a step that retention deletes before it is
  reached is skipped.
  """
  mngr = None  # opened once the trainer has created the folder
  last, waited_since = after_step, time.monotonic()
  while True:
    if mngr is None and epath.Path(directory(workdir)).exists():
      mngr = manager(workdir, read_only=True)
    complete = is_complete(workdir)  # read before listing: no step can be missed
    steps = []
    if mngr is not None:
      mngr.reload()
      steps = sorted(s for s in mngr.all_steps() if last is None or s > last)
    for step in steps:
      yield step
      last, waited_since = step, time.monotonic()
    if complete and not steps:
      return
    if not steps:
      if timeout_s is not None and time.monotonic() - waited_since > timeout_s:
        logging.warning("no new checkpoint in %s for %.0f s; stopping", directory(workdir),
                        timeout_s)
        return
      time.sleep(poll_s)


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


def _checkpoint_root(path: str) -> tuple[str, int | None]:
  """A workdir, its `checkpoints` folder, or a step folder → (root, step or None)."""
  p = epath.Path(path)
  if not p.exists():
    raise CheckpointError(f"{path}: no such checkpoint folder")
  if (p / "checkpoints").is_dir():
    return str(p / "checkpoints"), None
  if (p / "config").is_dir() and p.name.isdigit():
    return str(p.parent), int(p.name)
  return str(p), None


def read_config(mngr: ocp.CheckpointManager, step: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])


def load_params(mngr: ocp.CheckpointManager, step: int, module: nn.Module,
                item: str = "ema_params", shardings: Any = None) -> dict:
  """One params item of `step` alone (no optimizer state is read), shaped as `module`'s
  params and placed as `shardings` say (default: the first local device)."""
  shapes = params_lib.param_shapes(module)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, shapes)
  folder = epath.Path(mngr.directory) / str(step) / item
  if not folder.exists():
    raise CheckpointError(f"{folder.parent}: no {item} item (a checkpoint from before "
                          "per-role items, or not a TIP checkpoint)")
  return mngr.restore(step, args=ocp.args.Composite(**{
      item: ocp.args.StandardRestore(sharding.abstract(shapes, shardings))}))[item]


def _open(path: str, step: int | None) -> tuple[ocp.CheckpointManager, int]:
  """The read-only manager of a run's checkpoints and the step to read (default: latest)."""
  root, named_step = _checkpoint_root(path)
  step = named_step if step is None else step
  mngr = _manager(root, ocp.CheckpointManagerOptions(read_only=True, create=False))
  steps = mngr.all_steps()
  if not steps:
    raise CheckpointError(f"{path}: no TIP checkpoints in {root}")
  step = mngr.latest_step() if step is None else step
  if step not in steps:
    raise CheckpointError(f"{path}: no checkpoint for step {step} (have {sorted(steps)})")
  return mngr, int(step)


def run_config(path: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, int]:
  """The config and step (default: the latest) of a run's checkpoint."""
  mngr, step = _open(path, step)
  try:
    return read_config(mngr, step), step
  finally:
    mngr.close()


def load_estimator(path: str, step: int | None = None, use_ema: bool = True
                   ) -> tuple[ml_collections.ConfigDict, int, dict]:
  """(config, step, params) of an estimator run (`config.task` estimator; EMA params by
  default). Raises `CheckpointError` with one line for anything else."""
  mngr, step = _open(path, step)
  config = read_config(mngr, step)
  if config.task != "estimator":
    raise CheckpointError(f"{path}: a {config.task} run, not a degradation estimator run "
                          "(configs/estimator.py)")
  params = load_params(mngr, step, tasks_lib.estimator_module(config),
                       "ema_params" if use_ema else "params")
  mngr.close()
  return config, step, params


@dataclasses.dataclass
class Pretrained:
  """What a backbone pretraining run produced."""

  config: ml_collections.ConfigDict
  step: int
  backbone: Backbone   # the config's backbone with the trained part's params


def load_pretrained_backbone(path: str, step: int | None = None, use_ema: bool = True
                             ) -> Pretrained:
  """A pretraining run's backbone (`config.task` vae | unet): the one its config names,
  with the trained part's params (EMA by default, float32) from the checkpoint. Raises
  `CheckpointError` with one line for anything that is not such a run."""
  mngr, step = _open(path, step)
  config = read_config(mngr, step)
  if config.task not in ("vae", "unet"):
    raise CheckpointError(f"{path}: a {config.task} run, not a backbone pretraining run "
                          "(configs/prior.py)")
  comps = components_lib.build(config)
  params = load_params(mngr, step, tasks_lib.trained_module(config, comps),
                       "ema_params" if use_ema else "params")
  mngr.close()
  backbone = comps.backbone
  return Pretrained(config, step, backbone.with_params({**backbone.params, config.task: params}))


def load_for_inference(path: str, step: int | None = None, use_ema: bool = True,
                       backbone: str | None = None) -> Trained:
  """A trained TIP (EMA params by default) with its backbone, on the default device.

  Reads the config and one params item: no optimizer state. `backbone` overrides the
  folder the config names, for checkpoints moved between machines. Raises
  `CheckpointError` with one line for anything that is not such a run.
  """
  mngr, step = _open(path, step)
  config = read_config(mngr, step)
  if config.task != "tip":
    kind, made = (("pretraining run", "a backbone folder") if config.task in ("vae", "unet")
                  else ("run", "an estimator folder"))
    raise CheckpointError(f"{path}: a {config.task} {kind}, not a TIP one "
                          f"(tip-export-backbone turns it into {made})")
  if backbone is not None:
    config.model.backbone = backbone
  comps = components_lib.build(config)
  params = load_params(mngr, step, comps.controlnet, "ema_params" if use_ema else "params")
  mngr.close()
  return Trained(config=config, step=int(step), backbone=comps.backbone,
                 controlnet=comps.controlnet, controlnet_params=params,
                 resolution=int(config.data.resolution),
                 degrade_config=components_lib.degrade_config(config))

"""Finished (or running) runs read back for use: a TIP run for restoring and evaluating
(`load_for_inference`), a pretraining run (`load_pretrained_backbone`) and an estimator
run (`load_estimator`) for `tip-export-backbone`, and any run's config (`run_config`).

Each reads the config and one params item (EMA by default), never the optimizer state,
through `checkpoint.read_newest`: a file that cannot be read is named in one
`CheckpointError` line, as is a run of the wrong kind.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections

from tip_jax.degrade import DegradeConfig
from tip_jax.errors import CheckpointError
from tip_jax.experiment import checkpoint as ckpt
from tip_jax.experiment import components as components_lib
from tip_jax.experiment import tasks as tasks_lib
from tip_jax.models.backbone import Backbone
from tip_jax.models.controlnet import ControlNetModel


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


def _read_run(path: str, step: int | None, use_ema: bool, tasks: tuple[str, ...],
              refusal: Callable[[str], str], backbone: str | None = None
              ) -> tuple[ml_collections.ConfigDict, int, components_lib.Components, dict]:
  """The config, step, components and trained params (EMA or not) of a run whose
  `config.task` is one of `tasks`; `CheckpointError` with one line otherwise
  (`refusal` of the run's task) or when a file cannot be read (named, through
  `read_newest`). `backbone` replaces the folder the config names."""
  mngr, step = ckpt.open_read_only(path, step)
  item = "ema_params" if use_ema else "params"

  def read(s: int) -> tuple[ml_collections.ConfigDict, components_lib.Components, dict]:
    config = ckpt.read_config(mngr, s)
    if config.task not in tasks:
      raise CheckpointError(f"{path}: {refusal(config.task)}")
    if backbone is not None:
      config.model.backbone = backbone
    comps = components_lib.build(config)
    return config, comps, ckpt.load_params(mngr, s, tasks_lib.trained_module(config, comps), item)

  try:
    _, (config, comps, params) = ckpt.read_newest(mngr, read, [step], ("config", item),
                                                  fall_back=False)
  finally:
    mngr.close()
  return config, step, comps, params


def run_config(path: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, int]:
  """The config and step (default: the latest) of a run's checkpoint."""
  mngr, step = ckpt.open_read_only(path, step)
  try:
    _, config = ckpt.read_newest(mngr, lambda s: ckpt.read_config(mngr, s), [step],
                                 ("config",), fall_back=False)
  finally:
    mngr.close()
  return config, step


def load_estimator(path: str, step: int | None = None, use_ema: bool = True
                   ) -> tuple[ml_collections.ConfigDict, int, dict]:
  """(config, step, params) of an estimator run (`config.task` estimator; EMA params by
  default). Raises `CheckpointError` with one line for anything else, or a checkpoint
  file that cannot be read."""
  config, step, _, params = _read_run(
      path, step, use_ema, ("estimator",),
      lambda task: f"a {task} run, not a degradation estimator run (configs/estimator.py)")
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
  `CheckpointError` with one line for anything that is not such a run, or a checkpoint
  file that cannot be read."""
  config, step, comps, params = _read_run(
      path, step, use_ema, ("vae", "unet"),
      lambda task: f"a {task} run, not a backbone pretraining run (configs/prior.py)")
  backbone = comps.backbone
  return Pretrained(config, step, backbone.with_params({**backbone.params, config.task: params}))


def load_for_inference(path: str, step: int | None = None, use_ema: bool = True,
                       backbone: str | None = None) -> Trained:
  """A trained TIP (EMA params by default) with its backbone, on the default device.

  Reads the config and one params item: no optimizer state. `backbone` overrides the
  folder the config names, for checkpoints moved between machines. Raises
  `CheckpointError` with one line for anything that is not such a run, or a checkpoint
  file that cannot be read.
  """
  def refusal(task: str) -> str:
    kind, made = (("pretraining run", "a backbone folder") if task in ("vae", "unet")
                  else ("run", "an estimator folder"))
    return f"a {task} {kind}, not a TIP one (tip-export-backbone turns it into {made})"

  config, step, comps, params = _read_run(path, step, use_ema, ("tip",), refusal, backbone)
  return Trained(config=config, step=int(step), backbone=comps.backbone,
                 controlnet=comps.controlnet, controlnet_params=params,
                 resolution=int(config.data.resolution),
                 degrade_config=components_lib.degrade_config(config))

"""What a run trains, chosen by `config.task`; everything else is shared.

    tip    the ControlNet (E' and fusion convs included) steering the frozen backbone:
           the paper (configs/tip.py)
    vae    the backbone's VAE, as Stable Diffusion's autoencoder was trained
    unet   the backbone's UNet, text-to-image on the frozen VAE's latents and the frozen
           text encoder's caption states (configs/prior.py has both)
    estimator  the degradation estimator that writes restoration prompts
           (`tip_jax.estimate`, configs/estimator.py): no backbone at all, trained on
           TIP's degradation draws

A `Task` is what differs between them: the trained module and its initial params,
which frozen params the step reads, which batch keys go to the device, and the loss
(`tip_jax.experiment.loss`, `.pretrain`, `.estimator`). The TrainState, optimizer,
EMA, sharding, checkpoints, exact resume and the data pipeline are the same code for
all of them, so pretraining a backbone is the same job as training TIP. A pretrained
part starts from the backbone's own weights: random ones (`model.backbone=random`)
train from scratch, a folder's are fine-tuned.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from tip_jax.degrade import DegradeConfig
from tip_jax.errors import ConfigError
from tip_jax.estimate.network import DegradationEstimator
from tip_jax.experiment import components as components_lib
from tip_jax.experiment import estimator as estimator_lib
from tip_jax.experiment import loss as loss_lib
from tip_jax.experiment import pretrain
from tip_jax.metrics.lpips import LPIPSNet, load_lpips
from tip_jax.models import params as params_lib

TASKS = ("tip", "vae", "unet", "estimator")
Loss = Callable[[dict, dict, loss_lib.Batch], tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Task:
  """The trainer's view of a task (see the module docstring)."""

  name: str
  module: nn.Module                 # what is trained
  frozen_parts: tuple[str, ...]     # the backbone params the loss reads
  device_keys: tuple[str, ...]      # the pipeline batch keys the step takes
  initial_params: Callable[[], dict]  # float32, a function of config.seed
  prepare: Callable[[loss_lib.Batch, jax.Array], loss_lib.Batch]  # (batch, step) -> inputs
  loss: Loss                        # (params, frozen, inputs) -> (loss, logged parts)
  extra_frozen: dict = dataclasses.field(default_factory=dict)  # not the backbone's (LPIPS)


def check(config: ml_collections.ConfigDict) -> str:
  if config.task not in TASKS:
    raise ConfigError(f"task={config.task!r}: expected one of {TASKS}")
  return config.task


def trained_module(config: ml_collections.ConfigDict,
                   components: components_lib.Components) -> nn.Module:
  """The module `config.task` trains (what its checkpoints' params are for)."""
  if check(config) == "estimator":
    return estimator_module(config)
  backbone = components.backbone
  return {"tip": components.controlnet, "vae": backbone.vae.module,
          "unet": backbone.unet.module}[config.task]


def estimator_module(config: ml_collections.ConfigDict) -> DegradationEstimator:
  """The estimator `config.estimator` shapes, computing in `model.dtype`."""
  return DegradationEstimator(estimator_lib.network_config(config),
                              components_lib.model_options(config))


def _float32(tree: dict) -> dict:
  return components_lib.cast(tree, jnp.float32)


def build(config: ml_collections.ConfigDict, components: components_lib.Components,
          mesh: Mesh, batch_axes: tuple[str, ...], degrade_config: DegradeConfig) -> Task:
  """The task `config.task` names, its functions bound to the config and the mesh."""
  name, seed = check(config), int(config.seed)
  backbone = components.backbone
  module = trained_module(config, components)
  if name == "tip":
    blind_ids = loss_lib.blind_prompt_ids(components)
    timesteps, weighting = config.loss.timesteps, config.loss.weighting
    if timesteps not in loss_lib.TIMESTEPS:
      raise ConfigError(f"loss.timesteps={timesteps!r}: expected one of {loss_lib.TIMESTEPS}")
    if weighting not in loss_lib.WEIGHTINGS:
      raise ConfigError(f"loss.weighting={weighting!r}: expected one of {loss_lib.WEIGHTINGS}")
    if weighting != "none" and backbone.prediction_type not in ("epsilon", "v_prediction"):
      raise ConfigError(f"loss.weighting={weighting!r} needs an epsilon or v_prediction "
                        f"backbone, not {backbone.prediction_type!r}")
    tip_loss = functools.partial(loss_lib.loss_fn, models=components,
                                 schedule=backbone.schedule(), prompts=config.prompts,
                                 timesteps=timesteps, weighting=weighting)
    return Task(
        name=name, module=module, frozen_parts=("unet", "vae", "text_encoder"),
        device_keys=loss_lib.DEVICE_KEYS,
        initial_params=lambda: components_lib.init_controlnet(components, seed),
        prepare=functools.partial(loss_lib.device_batch, seed=seed,
                                  degrade_config=degrade_config, mesh=mesh,
                                  batch_axes=batch_axes, blind_ids=blind_ids),
        loss=lambda params, frozen, batch: (tip_loss(params, frozen, batch), {}))
  if name == "estimator":
    if degrade_config.mix != "example":
      raise ConfigError(f"degrade.mix={degrade_config.mix!r}: the estimator learns which "
                        "pipeline degraded each example, so it is drawn per 'example'")
    return Task(
        name=name, module=module, frozen_parts=(), device_keys=estimator_lib.DEVICE_KEYS,
        initial_params=lambda: _float32(params_lib.init_params(module, jax.random.key(seed))),
        prepare=functools.partial(estimator_lib.device_batch, degrade_config=degrade_config,
                                  mesh=mesh, batch_axes=batch_axes),
        loss=functools.partial(estimator_lib.loss, module=module,
                               strength_weight=float(config.estimator.strength_weight)))
  prepare = functools.partial(pretrain.device_batch, seed=seed)
  if name == "vae":
    v = config.vae
    lpips, extra = None, {}
    if v.lpips_weight:
      loaded = load_lpips(v.lpips_net)
      # the metric's "highest" precision is for scores; a loss lets the backend choose
      lpips, extra = LPIPSNet(loaded.module.net, precision=None), {"lpips": loaded.params}
    return Task(
        name=name, module=module, frozen_parts=(), device_keys=pretrain.DEVICE_KEYS,
        initial_params=lambda: _float32(backbone.vae.params), prepare=prepare,
        loss=functools.partial(pretrain.vae_loss, vae=module, lpips=lpips,
                               lpips_weight=float(v.lpips_weight),
                               kl_weight=float(v.kl_weight)),
        extra_frozen=extra)
  return Task(
      name=name, module=module, frozen_parts=("vae", "text_encoder"),
      device_keys=pretrain.DEVICE_KEYS, initial_params=lambda: _float32(backbone.unet.params),
      prepare=prepare, loss=functools.partial(pretrain.unet_loss, backbone=backbone,
                                              schedule=backbone.schedule()))

"""The models and frozen weights a config describes, shared by trainer, evaluator and restorer.

A config names a diffusers Stable Diffusion folder (`model.backbone=/path`), the small
prior the package ships (`model.backbone=embedded`: `tip_jax/assets/prior/`, trained by
this project, see `configs/prior.py`) or, explicitly, a random backbone of a preset
geometry (`model.backbone=random`, shaped by `model.geometry`, seeded by `config.seed`).
Checkpoints store none of them: every job re-reads or rebuilds the same weights. Nothing
falls back to random weights silently: an empty `model.backbone` is a `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from tip_jax.convert.diffusers import load_backbone
from tip_jax.degrade import DegradeConfig
from tip_jax.degrade.parameterized import TIPConfig
from tip_jax.diffusion.scheduler_config import SPACINGS
from tip_jax.errors import ConfigError
from tip_jax.models.backbone import Backbone, random_backbone
from tip_jax.models.controlnet import (CONDITIONING, FUSIONS, ControlNetConfig, ControlNetModel,
                                       controlnet_params_from_unet)
from tip_jax.models.layers import ModelOptions


RANDOM = "random"       # `model.backbone` value asking for the seeded random backbone
EMBEDDED = "embedded"   # `model.backbone` value naming the prior shipped in the package


def backbone_folder(spec: str) -> str:
  """The folder a non-random `model.backbone` names (the shipped prior for `embedded`)."""
  if spec == EMBEDDED:
    return str(importlib.resources.files("tip_jax") / "assets" / "prior")
  return spec


@dataclasses.dataclass(frozen=True)
class Components:
  """The frozen backbone (params as stored, or abstract) and the trainable ControlNet's module."""

  backbone: Backbone
  controlnet: ControlNetModel


def model_options(config: ml_collections.ConfigDict) -> ModelOptions:
  m = config.model
  return ModelOptions(dtype=jnp.dtype(m.dtype), attention_impl=m.attention_impl or None,
                      remat_policy=m.remat_policy or None,
                      attention_query_chunk=m.attention_query_chunk or None)


def degrade_config(config: ml_collections.ConfigDict) -> DegradeConfig:
  size = (config.data.resolution,) * 2
  return DegradeConfig(size=size, realesrgan_prob=config.degrade.realesrgan_prob,
                       loop=config.degrade.loop, mix=config.degrade.mix,
                       tip=TIPConfig(with_values_prob=config.degrade.with_values_prob))


def cast(tree: Any, dtype: jnp.dtype) -> Any:
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def build(config: ml_collections.ConfigDict, abstract: bool = False) -> Components:
  """Modules and frozen params; `abstract` gives ShapeDtypeStructs (nothing allocated).
  An estimator run's backbone is always abstract: it reads no weights, and the data
  pipeline only uses its tokenizer."""
  abstract = abstract or config.task == "estimator"
  options = model_options(config)
  if config.model.fusion not in FUSIONS:
    raise ConfigError(f"model.fusion={config.model.fusion!r}: expected one of {FUSIONS}")
  hints = tuple(c for c in CONDITIONING if c != "add")  # "add" is diffusers' ControlNet's
  conditioning = config.model.get("conditioning", "concat")  # runs from before the option
  if conditioning not in hints:
    raise ConfigError(f"model.conditioning={conditioning!r}: expected one of "
                      f"{hints}")
  if config.model.backbone == RANDOM:
    backbone = random_backbone(config.model.geometry, config.seed, options, abstract=abstract)
  elif config.model.backbone:
    if abstract:
      raise ConfigError("abstract components need model.backbone=random and a "
                        "model.geometry, not a backbone folder")
    backbone = load_backbone(backbone_folder(config.model.backbone), options)
  else:
    raise ConfigError("model.backbone is not set: give a diffusers Stable Diffusion folder "
                      f"(--config.model.backbone=/path/to/sd), {EMBEDDED!r} for the prior "
                      f"shipped in the package, or {RANDOM!r} for a random backbone of "
                      "model.geometry (tests, benchmarks)")
  if config.task == "unet":  # the UNet being pretrained learns the prediction its config names
    backbone = backbone.with_prediction_type(config.unet.prediction_type)
  spacing = config.model.get("timestep_spacing", "")  # runs from before the option
  if spacing:
    if spacing not in SPACINGS:
      raise ConfigError(f"model.timestep_spacing={spacing!r}: expected '' (the backbone's "
                        f"scheduler config) or one of {SPACINGS}")
    backbone = dataclasses.replace(backbone, scheduler_config={
        **backbone.scheduler_config, "timestep_spacing": spacing})
  vae_config = backbone.vae.module.config
  widths = tuple(config.model.get("conditioning_widths", ()))  # runs from before the option
  try:
    controlnet_config = ControlNetConfig.tip(
        backbone.unet.module.config, config.model.fusion, vae_config.downsample_factor,
        vae=vae_config if conditioning == "vae" else None, widths=widths)
  except ValueError as error:
    if not widths:  # the backbone's own shapes, not the option
      raise
    raise ConfigError(f"model.conditioning_widths={widths}: {error}") from error
  controlnet = ControlNetModel(controlnet_config, options)
  return Components(backbone=backbone, controlnet=controlnet)


def init_controlnet(components: Components, seed: int) -> dict:
  """Trainable params in float32: the UNet encoder copy, E' (fresh, or the VAE encoder's
  copy) and zero fusion convs."""
  backbone = components.backbone
  params = controlnet_params_from_unet(components.controlnet, backbone.unet.params,
                                       jax.random.key(seed + 1), backbone.vae.params)
  return cast(params, jnp.float32)

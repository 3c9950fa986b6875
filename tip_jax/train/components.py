"""The models and frozen weights a config describes, shared by trainer and inference.

A config names either a diffusers Stable Diffusion folder (`model.backbone`) or, for
CPU runs and benchmarks, a random backbone of a preset geometry. A random backbone is
a pure function of the config seed, so checkpoints never store it: the evaluator and
`TIPRestorer` rebuild it exactly, as they re-read a real backbone from its folder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from tip_jax.convert.diffusers import Backbone, load_backbone
from tip_jax.degrade import DegradeConfig
from tip_jax.degrade.parameterized import TIPConfig
from tip_jax.diffusion.schedules import sd_config
from tip_jax.models import params as params_lib
from tip_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
from tip_jax.models.controlnet import ControlNetConfig, ControlNetModel, controlnet_params_from_unet
from tip_jax.models.layers import ModelOptions
from tip_jax.models.tokenizer import bundled_tokenizer
from tip_jax.models.unet import UNet2DConditionModel, UNetConfig
from tip_jax.models.vae import AutoencoderKL, VAEConfig

GEOMETRIES = {
    "tiny": (UNetConfig.tiny, VAEConfig.tiny, CLIPTextConfig.tiny),
    "sd15": (UNetConfig.sd15, VAEConfig.sd, CLIPTextConfig.sd15),
    "sd21": (UNetConfig.sd21, VAEConfig.sd, CLIPTextConfig.sd21),
}


@dataclasses.dataclass(frozen=True)
class Components:
  """Modules (static) and the frozen backbone's params (arrays)."""

  unet: UNet2DConditionModel
  vae: AutoencoderKL
  text_encoder: CLIPTextModel
  controlnet: ControlNetModel
  tokenizer: Any
  scheduler_config: dict
  frozen: dict  # {"unet", "vae", "text_encoder"} params as stored (float32)

  @property
  def prediction_type(self) -> str:
    return self.unet.config.prediction_type

  @property
  def scaling_factor(self) -> float:
    return self.vae.config.scaling_factor

  def backbone(self) -> Backbone:
    """The frozen models as inference's `Backbone` (params as stored)."""
    f = self.frozen
    return Backbone(unet=(self.unet, f["unet"]), vae=(self.vae, f["vae"]),
                    text_encoder=(self.text_encoder, f["text_encoder"]),
                    tokenizer=self.tokenizer, scheduler_config=self.scheduler_config)


def model_options(config: ml_collections.ConfigDict) -> ModelOptions:
  m = config.model
  return ModelOptions(dtype=jnp.dtype(m.dtype), attention_impl=m.attention_impl or None,
                      remat_policy=m.remat_policy or None,
                      attention_query_chunk=m.attention_query_chunk or None)


def degrade_config(config: ml_collections.ConfigDict) -> DegradeConfig:
  size = (config.data.resolution,) * 2
  return DegradeConfig(size=size, realesrgan_prob=config.degrade.realesrgan_prob,
                       loop=config.degrade.loop,
                       tip=TIPConfig(with_values_prob=config.degrade.with_values_prob))


def cast(tree: Any, dtype: jnp.dtype) -> Any:
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def build(config: ml_collections.ConfigDict, abstract: bool = False) -> Components:
  """Modules and frozen params; `abstract` gives ShapeDtypeStructs (nothing allocated)."""
  options = model_options(config)
  if config.model.backbone:
    if abstract:
      raise ValueError("abstract components need a geometry, not a backbone folder")
    bb = load_backbone(config.model.backbone, options)
    unet, vae, text = bb.unet[0], bb.vae[0], bb.text_encoder[0]
    frozen = {"unet": bb.unet[1], "vae": bb.vae[1], "text_encoder": bb.text_encoder[1]}
    tokenizer, scheduler = bb.tokenizer, dict(bb.scheduler_config)
  else:
    if config.model.geometry not in GEOMETRIES:
      raise ValueError(f"model.geometry={config.model.geometry!r}: expected one of "
                       f"{sorted(GEOMETRIES)}")
    ucfg, vcfg, tcfg = (f() for f in GEOMETRIES[config.model.geometry])
    if config.model.geometry == "sd21":
      ucfg = dataclasses.replace(ucfg, prediction_type="v_prediction")
    ucfg = dataclasses.replace(ucfg, cross_attention_dim=tcfg.hidden_size)
    unet = UNet2DConditionModel(ucfg, options)
    vae, text = AutoencoderKL(vcfg, options), CLIPTextModel(tcfg, options)
    keys = jax.random.split(jax.random.key(config.seed), 3)
    make = ((lambda m, k: params_lib.param_shapes(m)) if abstract else
            (lambda m, k: params_lib.init_params(m, k)))
    frozen = {"unet": make(unet, keys[0]), "vae": make(vae, keys[1]),
              "text_encoder": make(text, keys[2])}
    # SD 2.x pads with "!" (id 0), SD 1.x with EOT: keep the geometry's convention.
    tokenizer = bundled_tokenizer("!" if config.model.geometry == "sd21" else "<|endoftext|>")
    scheduler = sd_config(ucfg.prediction_type)
  controlnet = ControlNetModel(ControlNetConfig.tip(unet.config, config.model.fusion), options)
  return Components(unet=unet, vae=vae, text_encoder=text, controlnet=controlnet,
                    tokenizer=tokenizer, scheduler_config=scheduler, frozen=frozen)


def init_controlnet(components: Components, seed: int) -> dict:
  """Trainable params in float32: the UNet encoder copy, fresh E' and zero fusion convs."""
  params = controlnet_params_from_unet(components.controlnet, components.frozen["unet"],
                                       jax.random.key(seed + 1))
  return cast(params, jnp.float32)

"""The frozen text-to-image model TIP steers: named parts, geometry presets, random weights.

A `Backbone` is what a diffusers Stable Diffusion folder holds (`convert.diffusers.
load_backbone` reads one) or, for CPU runs, tests and benchmarks, a random model of a
preset geometry (`random_backbone`): a pure function of its seed, so checkpoints never
store it and any job rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax

from tip_jax.diffusion.schedules import Schedule, sd_config
from tip_jax.errors import ConfigError
from tip_jax.models import params as params_lib
from tip_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
from tip_jax.models.layers import ModelOptions
from tip_jax.models.tokenizer import EOT, bundled_tokenizer
from tip_jax.models.unet import UNet2DConditionModel, UNetConfig
from tip_jax.models.vae import AutoencoderKL, VAEConfig


class Part(NamedTuple):
  """One model and its params (a plain pytree); unpacks as `module, params`."""

  module: nn.Module
  params: Any


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A frozen Stable Diffusion: UNet, VAE, CLIP text encoder, tokenizer, scheduler config."""

  unet: Part
  vae: Part
  text_encoder: Part
  tokenizer: Any
  scheduler_config: dict

  @property
  def prediction_type(self) -> str:
    return self.unet.module.config.prediction_type

  @property
  def scaling_factor(self) -> float:
    return self.vae.module.config.scaling_factor

  def schedule(self) -> Schedule:
    """The noise schedule the UNet was trained with (its prediction type included)."""
    return Schedule.from_config({**self.scheduler_config,
                                 "prediction_type": self.prediction_type})

  @property
  def params(self) -> dict:
    """{"unet", "vae", "text_encoder"} params: the frozen tree a train step takes."""
    return {"unet": self.unet.params, "vae": self.vae.params,
            "text_encoder": self.text_encoder.params}

  def with_prediction_type(self, prediction_type: str) -> Backbone:
    """The same weights read as predicting `prediction_type` (the UNet config and the
    scheduler config both say it, as diffusers' folders do)."""
    unet = self.unet.module.clone(config=dataclasses.replace(self.unet.module.config,
                                                             prediction_type=prediction_type))
    return dataclasses.replace(self, unet=Part(unet, self.unet.params), scheduler_config={
        **self.scheduler_config, "prediction_type": prediction_type})

  def with_params(self, params: dict) -> Backbone:
    """The same modules with other params (cast, placed on a mesh, or abstract)."""
    return dataclasses.replace(
        self, unet=Part(self.unet.module, params["unet"]),
        vae=Part(self.vae.module, params["vae"]),
        text_encoder=Part(self.text_encoder.module, params["text_encoder"]))


@dataclasses.dataclass(frozen=True)
class Geometry:
  """A preset's configs; the UNet's cross-attention width follows the text encoder."""

  unet: Callable[[], UNetConfig]
  vae: Callable[[], VAEConfig]
  text_encoder: Callable[[], CLIPTextConfig]
  prediction_type: str = "epsilon"
  pad_token: str = EOT   # SD 2.x pads prompts with "!" (id 0), SD 1.x with EOT

  def configs(self) -> tuple[UNetConfig, VAEConfig, CLIPTextConfig]:
    text = self.text_encoder()
    unet = dataclasses.replace(self.unet(), cross_attention_dim=text.hidden_size,
                               prediction_type=self.prediction_type)
    return unet, self.vae(), text


GEOMETRIES = {
    "tiny": Geometry(UNetConfig.tiny, VAEConfig.tiny, CLIPTextConfig.tiny),
    "mini": Geometry(UNetConfig.mini, VAEConfig.mini, CLIPTextConfig.tiny),
    "sd15": Geometry(UNetConfig.sd15, VAEConfig.sd, CLIPTextConfig.sd15),
    "sd21": Geometry(UNetConfig.sd21, VAEConfig.sd, CLIPTextConfig.sd21,
                     prediction_type="v_prediction", pad_token="!"),
}


def geometry(name: str) -> Geometry:
  if name not in GEOMETRIES:
    raise ConfigError(f"model.geometry={name!r}: expected one of {sorted(GEOMETRIES)}")
  return GEOMETRIES[name]


def random_backbone(name: str, seed: int, options: ModelOptions | None = None,
                    abstract: bool = False) -> Backbone:
  """A backbone of preset geometry `name` with params drawn from `seed` (`init_params`);
  `abstract` gives `ShapeDtypeStruct` params and allocates nothing."""
  preset = geometry(name)
  options = options or ModelOptions()
  unet_cfg, vae_cfg, text_cfg = preset.configs()
  modules = (UNet2DConditionModel(unet_cfg, options), AutoencoderKL(vae_cfg, options),
             CLIPTextModel(text_cfg, options))
  keys = jax.random.split(jax.random.key(seed), len(modules))
  parts = [Part(m, params_lib.param_shapes(m) if abstract else params_lib.init_params(m, k))
           for m, k in zip(modules, keys)]
  return Backbone(*parts, tokenizer=bundled_tokenizer(preset.pad_token),
                  scheduler_config=sd_config(unet_cfg.prediction_type))

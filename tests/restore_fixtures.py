"""A tiny random TIP restorer shared by the restore and CLI tests (built once per process).

Params are drawn on the host from the modules' abstract shapes (fan-in scaled normal
kernels, unit norm scales, small biases) instead of `init_params`: compiling the four
tiny models' init graphs costs about a minute of CPU, drawing them costs a second, and
the restorer's behaviour, not the init scheme, is under test. Every layer is random,
the fusion layer's zero convs included, so the ControlNet really steers the UNet.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from tip_jax.convert.diffusers import Backbone
from tip_jax.diffusion.schedules import sd_config
from tip_jax.models import params as params_lib
from tip_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
from tip_jax.models.controlnet import ControlNetConfig, ControlNetModel
from tip_jax.models.tokenizer import bundled_tokenizer
from tip_jax.models.unet import UNet2DConditionModel, UNetConfig
from tip_jax.models.vae import AutoencoderKL, VAEConfig
from tip_jax.restore import TIPRestorer

RESOLUTION = 128  # images up to 128 px restore untiled; tests ask for smaller tiles


def random_params(module, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  out = {}
  for path, shape in flatten_dict(params_lib.param_shapes(module)).items():
    dims = shape.shape
    if path[-1] == "scale":
      value = 1 + 0.1 * rng.standard_normal(dims)
    elif path[-1] == "bias":
      value = 0.05 * rng.standard_normal(dims)
    elif path[-1] == "embedding":
      value = 0.5 * rng.standard_normal(dims)
    else:
      value = rng.standard_normal(dims) / np.sqrt(np.prod(dims[:-1]))
    out[path] = jnp.asarray(value, jnp.float32)
  return unflatten_dict(out)


@functools.cache
def tiny_restorer(prediction_type: str = "epsilon") -> TIPRestorer:
  unet_cfg = UNetConfig.tiny()
  unet = UNet2DConditionModel(unet_cfg)
  controlnet = ControlNetModel(ControlNetConfig.tip(unet_cfg))
  vae = AutoencoderKL(VAEConfig.tiny())
  text = CLIPTextModel(CLIPTextConfig.tiny())
  backbone = Backbone(unet=(unet, random_params(unet, 0)), vae=(vae, random_params(vae, 1)),
                      text_encoder=(text, random_params(text, 2)),
                      tokenizer=bundled_tokenizer(), scheduler_config=sd_config(prediction_type))
  return TIPRestorer(backbone, controlnet, random_params(controlnet, 3), resolution=RESOLUTION)

"""A pretraining run → the files inference reads (`tip-export-backbone`): a backbone run
(`config.task` vae | unet) → a diffusers Stable Diffusion folder; an estimator run →
the degradation estimator's folder (`tip_jax.estimate`; what ships in
tip_jax/assets/estimator).

The run's checkpoint gives its backbone with the trained part (EMA params by default):
the VAE of a `vae` run, or the UNet of a `unet` run; the other parts are the ones its
config names (the random backbone fixed by the seed, or the folder it was given), so
exporting the VAE run and then the UNet run trained on that export gives one backbone.

A VAE run also sets the latent scaling factor, as LDM did for Stable Diffusion's VAE
(0.18215 there): 1 / the standard deviation of posterior samples of training crops, so
that the UNet trained on its scaled latents starts from unit variance, the scale its
noise schedule assumes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from tip_jax.convert.diffusers import save_backbone
from tip_jax.data import pipeline as data_lib
from tip_jax.data.config import DataConfig
from tip_jax.errors import ConfigError
from tip_jax.estimate.estimator import Estimator
from tip_jax.experiment import runs
from tip_jax.experiment import components as components_lib
from tip_jax.experiment import estimator as estimator_lib
from tip_jax.models import params as params_lib
from tip_jax.models.backbone import Backbone, Part

_BATCH = 8


@functools.partial(jax.jit, static_argnames="vae")
def _latent_sample(params: dict, images: jax.Array, key: jax.Array, *, vae: nn.Module
                   ) -> jax.Array:
  """Unscaled posterior samples of uint8 images."""
  mean, logvar = vae.apply({"params": params}, images.astype(jnp.float32) / 255 * 2 - 1,
                           method="encode")
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def latent_scaling_factor(backbone: Backbone, config: ml_collections.ConfigDict,
                          images: int) -> float:
  """1 / std of the VAE's posterior samples (minus its shift) over `images` crops of the
  config's training data, drawn with its seed."""
  data = DataConfig(**{**config.data.to_dict(), "num_workers": 0})
  batches = data_lib.make_iterator(data, batch_size=_BATCH, seed=config.seed,
                                   degrade_config=components_lib.degrade_config(config),
                                   tokenizer=backbone.tokenizer, process_index=0,
                                   process_count=1)
  vae = backbone.vae
  samples = [np.asarray(_latent_sample(vae.params, next(batches)["image"],
                                       jax.random.key(config.seed + i), vae=vae.module))
             for i in range(math.ceil(images / _BATCH))]
  batches.close()
  z = np.concatenate(samples) - (vae.module.config.shift_factor or 0.0)
  return float(1.0 / np.std(z, dtype=np.float64))


def export_backbone(workdir: str, out: str, *, step: int | None = None, use_ema: bool = True,
                    scale_images: int = 64, dtype: str = "float32") -> dict:
  """Writes the run's backbone to `out` (see the module docstring); returns what was
  exported: task, step and the VAE's scaling factor."""
  run = runs.load_pretrained_backbone(workdir, step, use_ema)
  backbone = run.backbone
  if run.config.task == "vae":
    scale = latent_scaling_factor(backbone, run.config, scale_images)
    vae = backbone.vae.module
    module = vae.clone(config=dataclasses.replace(vae.config, scaling_factor=scale))
    backbone = dataclasses.replace(backbone, vae=Part(module, backbone.vae.params))
    logging.info("VAE latent scaling factor: %.5f (over %d crops)", scale, scale_images)
  save_backbone(backbone, out, dtype)
  return {"task": run.config.task, "step": run.step, "out": os.path.abspath(out), "dtype": dtype,
          "scaling_factor": backbone.scaling_factor,
          "prediction_type": backbone.prediction_type}


def export_estimator(workdir: str, out: str, *, step: int | None = None,
                     use_ema: bool = True) -> dict:
  """Writes an estimator run's params and spec to `out` (`Estimator.save`); returns what
  was exported: task, step, folder and parameter count."""
  config, step, params = runs.load_estimator(workdir, step, use_ema)
  spec = estimator_lib.spec(config, components_lib.degrade_config(config), step=step)
  Estimator(params, spec).save(out)
  return {"task": "estimator", "step": step, "out": os.path.abspath(out),
          "params": params_lib.count_params(params)}


def export(workdir: str, out: str, *, step: int | None = None, use_ema: bool = True,
           scale_images: int = 64, dtype: str = "float32") -> dict:
  """`export_estimator` or `export_backbone`, as the run's task says. `dtype` is the
  backbone folder's; the estimator (2.5 MB) is always written in float32."""
  config, _ = runs.run_config(workdir, step)
  if config.task == "estimator":
    if dtype != "float32":
      raise ConfigError(f"dtype={dtype}: an estimator run is exported in float32 only")
    return export_estimator(workdir, out, step=step, use_ema=use_ema)
  return export_backbone(workdir, out, step=step, use_ema=use_ema, scale_images=scale_images,
                         dtype=dtype)

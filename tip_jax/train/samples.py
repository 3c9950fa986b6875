"""Periodic image grids during training, one kind per task.

    tip    degraded | restored | clean, with both prompts, restored through
           `TIPRestorer` (the code people use, so a grid shows what a checkpoint does)
    vae    clean | reconstruction (the posterior mean decoded), PSNR under each
    unet   for fixed captions: a text-to-image sample (DDIM, classifier-free guidance)
           beside the training photograph the caption describes
    estimator  degraded crops (8-bit, as the step sees them), each labelled with its
           true restoration prompt and the one the estimator writes

A fixed handful of examples (their own seed, so resuming shows the same ones) is run
with the EMA params. Grids go to TensorBoard and to `workdir/samples/step_<N>.png`.
"""

from __future__ import annotations

import abc
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from tip_jax.data.config import DataConfig
from tip_jax.degrade import degrade, params_from_tree, restoration_prompt
from tip_jax.diffusion import samplers
from tip_jax.estimate.estimator import Estimator
from tip_jax.experiment import estimator as estimator_lib
from tip_jax.experiment import summaries
from tip_jax.experiment.setup import Experiment
from tip_jax.image_io import labelled_grid, write_png
from tip_jax.metrics.pixel import psnr
from tip_jax.models.tokenizer import tokenize
from tip_jax.restore import DEFAULT_GUIDANCE, TIPRestorer
from tip_jax.sampling import Layout, decode, encode_text


def _examples(exp: Experiment, **data: Any) -> dict:
  """The grid's fixed examples: one batch of `config.sample_images`, seed + 1, read in
  this process (`data` overrides fields of the config's data)."""
  config = exp.config
  data = DataConfig(**{**config.data.to_dict(), "num_workers": 0, **data})
  return next(exp.data_iterator(data, seed=config.seed + 1, batch_size=config.sample_images,
                                process_index=0, process_count=1))


class _Grid(abc.ABC):
  """Call with (step, EMA params) on every process; process 0 renders and writes."""

  columns = 3

  def __init__(self, exp: Experiment, writer: summaries.SummaryWriter):
    self.writer = writer
    self.folder = os.path.join(exp.workdir, "samples")

  @abc.abstractmethod
  def render(self, params: Any) -> tuple[list[np.ndarray], list[str], dict[str, float]]:
    """(tiles in [0, 1], their labels, scalars to log) for host-side EMA params."""

  def __call__(self, step: int, ema_params: Any) -> None:
    if jax.process_count() > 1:  # every process joins the gather; only process 0 samples
      ema_params = multihost_utils.process_allgather(ema_params, tiled=True)
    if jax.process_index() != 0:
      return
    tiles, labels, scalars = self.render(jax.device_get(ema_params))
    grid = np.asarray(labelled_grid(tiles, labels, columns=self.columns))
    self.writer.write_images(step, {"samples": grid[None]})
    if scalars:
      self.writer.write_scalars(step, scalars)
    path = os.path.join(self.folder, f"step_{step:07d}.png")
    write_png(grid, path)
    logging.info("sample grid: %s", path)


class SampleGrids(_Grid):
  """TIP: degraded | restored | clean, labelled with the prompts given."""

  def __init__(self, exp: Experiment, writer: summaries.SummaryWriter):
    super().__init__(exp, writer)
    config, degrade_config = exp.config, exp.degrade_config
    batch = _examples(exp)
    clean = batch["image"].astype(np.float32) / 255
    degraded = degrade(clean, params_from_tree(batch["degrade"], degrade_config))
    self.clean = clean
    self.degraded = np.asarray(np.round(np.asarray(degraded) * 255), np.uint8)
    use = config.prompts
    self.semantic = [str(p) if use.semantic else "" for p in batch["semantic_prompt"]]
    self.restoration = [str(p) if use.restoration else "" for p in batch["restoration_prompt"]]
    self.restorer = TIPRestorer(exp.components.backbone, exp.components.controlnet, None,
                                resolution=config.data.resolution, degrade_config=degrade_config,
                                uses_semantic=bool(use.semantic),
                                uses_restoration=bool(use.restoration))
    self.steps = config.sample_steps
    self.guidance = float(config.evals.guidance)  # as the run is scored

  def render(self, params: Any) -> tuple[list[np.ndarray], list[str], dict[str, float]]:
    restored = self.restorer.with_params(params).restore_batch(
        self.degraded, self.semantic, self.restoration, steps=self.steps,
        guidance=self.guidance, seed=0, upsample=False)
    tiles, labels = [], []
    for i, (sem, res) in enumerate(zip(self.semantic, self.restoration)):
      tiles += [self.degraded[i] / 255, restored[i] / 255, self.clean[i]]
      labels += [f"c_r: {res or '(none)'}", f"c_s: {sem or '(none)'}", "clean"]
    return tiles, labels, {}


@functools.partial(jax.jit, static_argnames="vae")
def _reconstruct(params: dict, images: jax.Array, *, vae: nn.Module) -> jax.Array:
  """[-1, 1] images → the posterior mean decoded (what the VAE keeps of them)."""
  return vae.apply({"params": params}, images)


class Reconstructions(_Grid):
  """VAE pretraining: clean | reconstruction, in pairs; logs their mean PSNR."""

  columns = 4

  def __init__(self, exp: Experiment, writer: summaries.SummaryWriter):
    super().__init__(exp, writer)
    self.clean = _examples(exp)["image"].astype(np.float32) / 255
    self.vae = exp.task.module

  def render(self, params: Any) -> tuple[list[np.ndarray], list[str], dict[str, float]]:
    out = _reconstruct(params, jnp.asarray(self.clean * 2 - 1), vae=self.vae)
    recon = np.clip((np.asarray(out, np.float32) + 1) / 2, 0, 1)
    scores = np.asarray(psnr(recon, self.clean))
    tiles, labels = [], []
    for clean, image, score in zip(self.clean, recon, scores):
      tiles += [clean, image]
      labels += ["clean", f"reconstruction, PSNR {score:.1f} dB"]
    return tiles, labels, {"samples/psnr": float(np.mean(scores))}


@functools.partial(jax.jit, static_argnames="unet")
def _text_to_image(params: dict, start: jax.Array, text: jax.Array, empty: jax.Array,
                   plan: samplers.Plan, guidance: float, *, unet: nn.Module) -> jax.Array:
  """Latents from `start` noise for caption states `text` (B, L, D), guided away from
  the empty caption's states `empty` (1, L, D)."""
  batch = start.shape[0]
  context = jnp.concatenate([text, jnp.broadcast_to(empty, text.shape)])

  def denoise(x, t):
    out = unet.apply({"params": params}, jnp.concatenate([x, x]),
                     jnp.full((2 * batch,), t), context)
    return out[batch:] + guidance * (out[:batch] - out[batch:])

  return samplers.sample(denoise, start, plan)


class TextToImage(_Grid):
  """UNet pretraining: sample | training photo, for each fixed caption."""

  columns = 4

  def __init__(self, exp: Experiment, writer: summaries.SummaryWriter):
    super().__init__(exp, writer)
    batch = _examples(exp, semantic_dropout=0.0)
    self.clean = batch["image"].astype(np.float32) / 255
    self.captions = [str(c) for c in batch["semantic_prompt"]]
    backbone = exp.components.backbone
    self.unet, self.vae = exp.task.module, backbone.vae
    text = backbone.text_encoder
    ids = tokenize(backbone.tokenizer, self.captions + [""])
    states = encode_text(text.params, ids, text_encoder=text.module)
    self.text, self.empty = states[:-1], states[-1:]
    self.plan = samplers.make_plan(backbone.schedule(), exp.config.sample_steps)
    factor = self.vae.module.config.downsample_factor
    side = exp.config.data.resolution // factor
    self.layout = Layout((side, side), None, cfg=False, restoration_cfg=False, factor=factor)
    self.start = jax.random.normal(jax.random.key(exp.config.seed + 1),
                                   (len(self.captions), side, side,
                                    self.unet.config.in_channels))

  def render(self, params: Any) -> tuple[list[np.ndarray], list[str], dict[str, float]]:
    latents = _text_to_image(params, self.start, self.text, self.empty, self.plan,
                             DEFAULT_GUIDANCE, unet=self.unet)
    images = decode(self.vae.params, latents, vae=self.vae.module, layout=self.layout)
    images = np.clip((np.asarray(images, np.float32) + 1) / 2, 0, 1)
    tiles, labels = [], []
    for caption, image, clean in zip(self.captions, images, self.clean):
      tiles += [image, clean]
      labels += [f"c_s: {caption}", "training photo"]
    return tiles, labels, {}


class Estimates(_Grid):
  """Estimator training: degraded crops, true prompt vs estimated prompt; logs the share
  of crops whose whole prompt (stages and rounded strengths) the estimate gets right."""

  columns = 4

  def __init__(self, exp: Experiment, writer: summaries.SummaryWriter):
    super().__init__(exp, writer)
    batch = _examples(exp)
    params = params_from_tree(batch["degrade"], exp.degrade_config)
    degraded = degrade(batch["image"].astype(np.float32) / 255, params)
    self.degraded = np.round(np.clip(np.asarray(degraded), 0, 1) * 255).astype(np.uint8)
    self.truth = restoration_prompt(params, with_values=True)
    self.spec = estimator_lib.spec(exp.config, exp.degrade_config)

  def render(self, params: Any) -> tuple[list[np.ndarray], list[str], dict[str, float]]:
    estimator = Estimator(params, self.spec)
    guesses = [estimator.estimate(image).prompt() for image in self.degraded]
    tiles = [image / 255 for image in self.degraded]
    labels = [f"true: {t or '(none)'} | estimated: {g or '(none)'}"
              for t, g in zip(self.truth, guesses)]
    exact = np.mean([t == g for t, g in zip(self.truth, guesses)])
    return tiles, labels, {"samples/exact_prompts": float(exact)}


GRIDS = {"tip": SampleGrids, "vae": Reconstructions, "unet": TextToImage,
         "estimator": Estimates}

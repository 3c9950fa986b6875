"""Periodic image grids during training: degraded | restored | clean, with both prompts.

A fixed handful of examples (their own seed, so resuming shows the same ones) is
restored with the EMA params through `TIPRestorer`, the same code people use, so the
grids show what a checkpoint would do. Grids go to TensorBoard and to
`workdir/samples/step_<N>.png`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from jax.experimental import multihost_utils

from tip_jax.data.config import DataConfig
from tip_jax.degrade import degrade, params_from_tree
from tip_jax.experiment.setup import Experiment
from tip_jax.image_io import labelled_grid, write_png
from tip_jax.restore import TIPRestorer


class SampleGrids:
  """Call with (step, EMA params) on every process; process 0 writes the grid."""

  def __init__(self, exp: Experiment, writer: metric_writers.MetricWriter):
    config, degrade_config = exp.config, exp.degrade_config
    data = DataConfig(**{**config.data.to_dict(), "num_workers": 0})
    batch = next(exp.data_iterator(data, seed=config.seed + 1,
                                   batch_size=config.sample_images, process_index=0,
                                   process_count=1))
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
    self.steps, self.writer = config.sample_steps, writer
    self.folder = os.path.join(exp.workdir, "samples")

  def __call__(self, step: int, ema_params: Any) -> None:
    if jax.process_count() > 1:  # every process joins the gather; only process 0 samples
      ema_params = multihost_utils.process_allgather(ema_params, tiled=True)
    if jax.process_index() != 0:
      return
    restorer = self.restorer.with_params(jax.device_get(ema_params))
    restored = restorer.restore_batch(self.degraded, self.semantic, self.restoration,
                                      steps=self.steps, seed=0, upsample=False)
    tiles, labels = [], []
    for i, (sem, res) in enumerate(zip(self.semantic, self.restoration)):
      tiles += [self.degraded[i] / 255, restored[i] / 255, self.clean[i]]
      labels += [f"c_r: {res or '(none)'}", f"c_s: {sem or '(none)'}", "clean"]
    grid = np.asarray(labelled_grid(tiles, labels, columns=3))
    self.writer.write_images(step, {"samples": grid[None]})
    path = os.path.join(self.folder, f"step_{step:07d}.png")
    write_png(grid, path)
    logging.info("sample grid: %s", path)

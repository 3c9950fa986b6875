"""Degradation estimator config: `--config configs/estimator.py:estimator`.

Trains the network of `tip_jax.estimate` (reads a photo, writes the restoration prompt
TIP understands) in the shared trainer: same data pipeline, degradations drawn on
device exactly as for TIP (half Real-ESRGAN, half the parameterised pipeline, with the
parameterised ranges of the TIP model it serves), Orbax checkpoints, exact resume,
TensorBoard scalars (loss parts, presence accuracies, strength errors) and sample grids
(degraded crops labelled with the true and the estimated prompt). CPU-sized: the
training photos of the bundled demo source (never the held-out ones its tables are
measured on), 64² crops. The shipped estimator (tip_jax/assets/estimator/) is this
config, seed 0, exported:

    tip-train --config configs/estimator.py:estimator --workdir /tmp/estimator
    tip-export-backbone /tmp/estimator tip_jax/assets/estimator --overwrite

No backbone weights are read (`model.backbone=random` only provides the tokenizer the
data pipeline uses). The fields are tip.py's, plus the `estimator` block.
"""

from __future__ import annotations

import os

import ml_collections

from tip_jax.errors import ConfigError
from tip_jax.experiment.config import load_config

BASES = ("estimator",)


def get_config(arg: str = "estimator") -> ml_collections.ConfigDict:
  arg = (arg or "estimator").strip()
  if arg not in BASES:
    raise ConfigError(f"unknown config part {arg!r}; bases {BASES}")
  c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tip.py:tiny"))
  c.task = "estimator"
  c.name = "estimator"
  c.model.backbone = "random"    # its tokenizer only: no backbone weights are read
  c.model.geometry = "tiny"
  c.evals.after_training = False  # the estimator's tables: benchmarks/estimator.py
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 32
  c.data.num_workers = 1
  c.data.source = "demo"         # the 15 photographs of the core dependencies, not gradio's
  # tiny's data.channel_shuffle (0.5) is kept: crops are permuted before they are
  # degraded on device, so every label stays exact and the colours vary more.
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 0       # with a 20-step warm-up, seed 0 stalled at chance (measured)
  c.optim.schedule = "cosine"
  c.optim.weight_decay = 1e-4
  c.ema_decay = 0.99
  c.log_every_steps = 50
  c.checkpoint_every_steps = 250
  c.sample_every_steps = 500
  c.sample_images = 8

  c.estimator = ml_collections.ConfigDict()
  c.estimator.widths = (16, 32, 64, 128)   # channels per stage (NetworkConfig)
  c.estimator.blocks = 1
  c.estimator.head = 128
  c.estimator.strength_weight = 2.0        # L1 of unit-space strengths vs the BCE terms
  # Probability above which the prompt says "Remove all degradation" / names a stage
  # (written into the exported estimator; `tip-estimate` reads them from there).
  c.estimator.blind_threshold = 0.5
  c.estimator.stage_threshold = 0.5
  return c

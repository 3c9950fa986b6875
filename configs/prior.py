"""Backbone pretraining configs: `--config configs/prior.py:<base>`.

TIP steers a *pretrained* text-to-image model. These train one in the same trainer
(same checkpoints, exact resume, metrics, sample grids), in two stages as Stable
Diffusion was: the VAE, then the UNet on its frozen latents. The defaults are CPU-sized
and are the recipe of the prior shipped in `tip_jax/assets/prior/` (the tiny config's
`model.backbone=embedded`): the `mini` geometry, the bundled training photos
(`tip_jax/data/demo.py`; the held-out ones are never read), 64² crops, seed 0.

Bases
  vae    the VAE (L1 + LPIPS + KL, as SD's autoencoder, with a stronger KL weight; no
         adversarial term), from the random backbone's VAE (`model.backbone=random`,
         seeded).
  unet   the text-to-image UNet (v-prediction; `--config.unet.prediction_type=
         epsilon` for ε) on the frozen VAE and text encoder of a backbone folder
         (the VAE run's export), captions dropped 10% of the time for classifier-free
         guidance.

The shipped prior, reproduced (seeded; bitwise on the same kind of machine):
  tip-train --config configs/prior.py:vae --workdir /tmp/prior_vae
  tip-export-backbone /tmp/prior_vae /tmp/prior_vae_backbone
  tip-train --config configs/prior.py:unet --workdir /tmp/prior_unet \
    --config.model.backbone=/tmp/prior_vae_backbone
  tip-export-backbone /tmp/prior_unet tip_jax/assets/prior --dtype float16 --overwrite
TIP then trains on it (`configs/tip.py:tiny`), or on any export:
  tip-train --config configs/tip.py:tiny --workdir /tmp/tip --config.model.backbone=OUT

The text encoder is the random backbone's, frozen and fixed by the seed (README,
"Pretraining a backbone", says why). Larger geometries: `--config.model.geometry=sd15`
with `--config.data.resolution=256` and a real data source; the fields are tip.py's.
"""

from __future__ import annotations

import os

import ml_collections

from tip_jax.errors import ConfigError
from tip_jax.experiment.config import load_config

BASES = ("vae", "unet")


def _tiny() -> ml_collections.ConfigDict:
  """tip.py's tiny base: the geometry, data and loop settings both stages share."""
  return load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tip.py:tiny"))


def get_config(arg: str = "vae") -> ml_collections.ConfigDict:
  arg = (arg or "vae").strip()
  if arg not in BASES:
    raise ConfigError(f"unknown config part {arg!r}; bases {BASES}")
  c = _tiny()
  c.task = arg
  c.name = f"prior_{arg}"
  c.model.geometry = "mini"     # 4x VAE: 64² crops → 16² latents (VAEConfig.mini says why)
  c.data.source = "demo"        # the 15 photographs of the core dependencies, not gradio's
  c.total_steps = 4000
  c.optim.warmup_steps = 100
  c.optim.schedule = "cosine"
  c.ema_decay = 0.99            # a ~100-step window: from-scratch weights leave it fast
  c.checkpoint_every_steps = 500
  c.sample_every_steps = 500
  c.sample_images = 8
  c.log_every_steps = 50
  c.evals.after_training = False  # the evaluator scores TIP runs; these log their own grids
  if arg == "vae":
    c.model.backbone = "random"  # from scratch: the random backbone's VAE, seeded
    c.optim.lr = 5e-4
    c.vae = ml_collections.ConfigDict()
    c.vae.lpips_weight = 1.0    # LDM's perceptual_weight
    c.vae.lpips_net = "alex"    # LDM used VGG16 ("vgg"); AlexNet is ~20x cheaper on a CPU
    # Not LDM's 1e-6 (kl-f8, see tip_jax/experiment/pretrain.py): at 1e-6 the posterior
    # is a point (std 0.006 of the latents'), and the decoder turns the small UNet's
    # leftover latent error into pixel error (latent noise at MSE 0.03: 24.6 → 22.9 dB).
    # 1e-2 makes it absorb that (24.8 → 23.8 dB) at no cost in reconstruction (README,
    # "Pretraining a backbone").
    c.vae.kl_weight = 1e-2
    # Half the crops with their RGB channels permuted: the training photos' few colours
    # (half of them are grey) left a held-out dusk sky 0.08 too bright, 3.5 dB of the
    # held-out reconstruction error; the UNet stage keeps the photos' own colours, which
    # its captions name.
    c.data.channel_shuffle = 0.5
  else:
    c.total_steps = 2000
    c.model.backbone = ""       # must be given: the folder holding the trained VAE
    c.optim.lr = 5e-4
    c.sample_steps = 25
    c.unet = ml_collections.ConfigDict()
    # v, as SD2 (`epsilon` for SD1's): near T an ε-model's x̂0 = (z_t − √(1−ᾱ)ε̂)/√ᾱ
    # magnifies its squared error 200-fold, so the ControlNet on it cannot set a
    # restoration's layout in the first steps; a v-model predicts x̂0 there directly.
    c.unet.prediction_type = "v_prediction"
    # The photos' own colours, which the captions name (tiny's TIP stage permutes
    # them): a prior trained on permuted crops made TIP on it 1.0 dB worse on set A's
    # full prompts and 1.2 dB on set B's (README "Pretraining a backbone").
    c.data.channel_shuffle = 0.0
  return c

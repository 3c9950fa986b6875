"""Usage: tip-export-backbone WORKDIR OUT [--step N] [--noema] [--overwrite]

    tip-export-backbone /tmp/prior_vae /tmp/prior_vae_backbone

Writes the backbone of a pretraining run (configs/prior.py: vae or unet) as a diffusers
Stable Diffusion folder: unet/, vae/, text_encoder/ (safetensors + config.json),
tokenizer/, scheduler/ and model_index.json, which diffusers' and transformers'
`from_pretrained` read and which a config points at with `--config.model.backbone=OUT`.
The trained part gets the checkpoint's EMA params (--noema: the raw ones); the others
are the backbone the run's config names. A VAE run also measures the latent scaling
factor on its training crops (tip_jax/train/export.py). An estimator run
(configs/estimator.py) is written as the folder `tip-estimate --estimator` reads
(model.safetensors + config.json):

    tip-export-backbone /tmp/estimator tip_jax/assets/estimator --overwrite

Prints what it wrote as JSON.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from tip_jax.cli import common

PROG = "tip-export-backbone"
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
_EMA = flags.DEFINE_bool("ema", True, "Export the EMA params (--noema: the raw params).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "float16"],
                           "Weights' type in the files (float16: half the size; readers "
                           "upcast to their compute type).")
_SCALE_IMAGES = flags.DEFINE_integer("scale_images", 64, "Training crops a VAE run's latent "
                                     "scaling factor is measured on.")


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    common.fail(PROG, "give WORKDIR and OUT (usage: tip-export-backbone /tmp/prior_vae "
                "/tmp/prior_vae_backbone)")
  workdir, out = argv[1], argv[2]
  if os.path.exists(out) and not os.path.isdir(out):
    common.fail(PROG, f"{out} exists and is not a folder")
  if os.path.isdir(out) and os.listdir(out) and not common.OVERWRITE.value:
    common.fail(PROG, f"{out} exists and is not empty; pass --overwrite to replace its files")
  from tip_jax.experiment import checkpoint_files  # deferred: JAX starts only for real work
  from tip_jax.train.export import export
  checkpoint_files.quiet_background_failures()  # a damaged checkpoint: one line, no more
  print(json.dumps(export(workdir, out, step=_STEP.value, use_ema=_EMA.value,
                          scale_images=_SCALE_IMAGES.value, dtype=_DTYPE.value)))


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__], common])


if __name__ == "__main__":
  run()

"""Usage: tip-degrade IMAGE [--n 8] [--out degradations.png] [--prompt PROMPT] [options]

    tip-degrade photo.jpg --n 8 --out grid.png
    tip-degrade photo.jpg --n 4 --out grid.png --prompt "Deblur with sigma 2.0; Dejpeg with quality 40;"

Look at the training degradations.

Writes one labelled grid: the clean crop, then degraded versions with the restoration
prompt of each written under its tile. With --prompt, every tile applies that prompt
(its noise differs per tile); "Remove all degradation" draws Real-ESRGAN degradations.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
from absl import flags
from PIL import Image

from tip_jax.cli import common, data_flags
from tip_jax.degrade import pipeline, prompts
from tip_jax.degrade.realesrgan import RealESRGANConfig
from tip_jax.image_io import labelled_grid, read_rgb, write_png

PROG = "tip-degrade"
_N = flags.DEFINE_integer("n", 8, "How many degraded tiles.")
_PROMPT = flags.DEFINE_string("prompt", None, "Apply this restoration prompt instead of "
                              "sampling the training mix.")
flags.declare_key_flag("size")
_PRESET = flags.DEFINE_enum("preset", "x4plus", ["x4plus", "stablesr"], "Real-ESRGAN values.")


def load_crop(path: str, size: int) -> np.ndarray:
  """Centre square crop resized to `size`, float32 [0, 1]; raises ImageError."""
  im = Image.fromarray(read_rgb(path))
  side = min(im.size)
  left, top = (im.width - side) // 2, (im.height - side) // 2
  im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
  return np.asarray(im, np.float32) / 255.0


def make_params(config: pipeline.DegradeConfig, n: int, prompt: str | None, seed: int):
  if prompt is None:
    return pipeline.sample_params(seed, n, config)
  if prompts.is_blind(prompt):
    blind = pipeline.DegradeConfig(size=config.size, realesrgan_prob=1.0,
                                   realesrgan=config.realesrgan)
    return pipeline.sample_params(seed, n, blind)
  one = pipeline.parse_restoration_prompt(prompt, config)
  params = jax.tree.map(lambda x: np.repeat(np.asarray(x), n, axis=0), one)
  params = params.replace(noise_seed=np.arange(n, dtype=np.uint32) + np.uint32(seed))
  return params, pipeline.restoration_prompt(params, with_values=True)


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    common.fail(PROG, "give exactly one IMAGE (usage: tip-degrade IMAGE --n 8 --out grid.png)")
  out = common.OUT.value or "degradations.png"
  if os.path.exists(out) and not common.OVERWRITE.value:
    common.fail(PROG, f"{out} exists; pass --overwrite to replace it")
  if _N.value < 1:
    common.fail(PROG, "--n must be at least 1")
  size = data_flags.SIZE.value or 256
  config = pipeline.DegradeConfig(
      size=(size, size),
      realesrgan=getattr(RealESRGANConfig, _PRESET.value)())
  params, texts = make_params(config, _N.value, _PROMPT.value, common.SEED.value)
  clean = load_crop(argv[1], size)
  images = np.repeat(clean[None], _N.value, axis=0)
  degraded = np.asarray(jax.jit(pipeline.degrade)(images, params))
  grid = labelled_grid([clean, *degraded],
                       ["clean", *(t or "(no degradation named)" for t in texts)])
  write_png(grid, out)
  print(f"{PROG}: wrote {out}: {_N.value} degradations of {argv[1]}")


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__], common])


if __name__ == "__main__":
  run()

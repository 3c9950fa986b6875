"""TIP's parameterised degradation: blur -> downsample -> noise -> JPEG, each with p = 0.5.

The host draws each example's stages (`sample`), the prompt is written from exactly
those numbers, and the device applies them (`apply`, one example, vmapped or mapped
by the caller). As in Real-ESRGAN, on which the paper builds this pipeline, noise
and JPEG act on the downsampled image, which is then brought back to the input size.
Skipped stages are `lax.cond`s on per-example flags, so every example runs the same
static-shape program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tip_jax.degrade import jpeg, kernels, ops, prompts, resizing


@dataclasses.dataclass(frozen=True)
class TIPConfig:
  """Ranges and probabilities of the parameterised pipeline.

  The paper gives the stages, their order, p = 0.5 each and the prompt wording, but
  not the ranges; these follow its examples ("Deblur with sigma 2.9", "Upsample to
  4.0x", "Denoise with sigma 0.12", "Dejpeg with quality 40") and Real-ESRGAN's ranges.
  """

  stage_prob: float = 0.5
  with_values_prob: float = 0.5     # prompt with values vs types only, per example
  blur_sigma: tuple[float, float] = (0.2, 3.0)
  downsample: tuple[float, float] = (1.0, 4.0)
  noise_sigma: tuple[float, float] = (0.01, 0.12)
  jpeg_quality: tuple[float, float] = (30.0, 95.0)
  down_mode: int = resizing.AREA             # box-filtered downsampling (no aliasing) ...
  up_mode: int = resizing.BICUBIC            # ... then bicubic back to the input size

  @property
  def ranges(self) -> dict[str, tuple[float, float]]:
    return {c.field: getattr(self, c.field) for c in prompts.CLAUSES}

  @property
  def defaults(self) -> dict[str, float]:
    """Values a type-only prompt ("Deblur;") applies: the middle of each range."""
    return {f: prompts.quantize(f, (lo + hi) / 2) for f, (lo, hi) in self.ranges.items()}


class TIPParams(NamedTuple):
  """Per-example arrays (leading batch axis); `*_on` flags select the applied stages."""

  blur_on: np.ndarray
  blur_sigma: np.ndarray
  down_on: np.ndarray
  downsample: np.ndarray
  noise_on: np.ndarray
  noise_sigma: np.ndarray
  jpeg_on: np.ndarray
  jpeg_quality: np.ndarray
  with_values: np.ndarray


# Each stage's value field, its on-flag, and the value it holds when skipped (the
# degradation estimator reads its training labels through this too).
STAGES = {"blur_sigma": ("blur_on", 1.0), "downsample": ("down_on", 1.0),
           "noise_sigma": ("noise_on", 0.0), "jpeg_quality": ("jpeg_on", 95.0)}


def sample(rng: np.random.Generator, config: TIPConfig) -> prompts.Stages:
  """One example's stages, each value on its prompt's printing grid."""
  values = {}
  for field, (low, high) in config.ranges.items():
    if rng.random() < config.stage_prob:
      values[field] = prompts.quantize(field, rng.uniform(low, high))
  return prompts.Stages(**values, with_values=bool(rng.random() < config.with_values_prob))


def to_arrays(stages: list[prompts.Stages]) -> TIPParams:
  columns = {}
  for field, (flag, identity) in STAGES.items():
    values = [getattr(s, field) for s in stages]
    columns[flag] = np.array([v is not None for v in values])
    columns[field] = np.asarray([identity if v is None else v for v in values], np.float32)
  return TIPParams(**columns, with_values=np.array([s.with_values for s in stages]))


def from_arrays(params: TIPParams) -> list[prompts.Stages]:
  out = []
  for i in range(len(params.with_values)):
    values = {f: prompts.quantize(f, getattr(params, f)[i]) for f, (flag, _) in STAGES.items()
              if getattr(params, flag)[i]}
    out.append(prompts.Stages(**values, with_values=bool(params.with_values[i])))
  return out


# With `apply(bucketed=True)`, a factor >= 2 (>= 3) puts the small image on a canvas of
# about half (a third of) the input side, so JPEG and the resizes touch a quarter (a
# ninth) of the pixels: 1.4x the throughput at 512^2 with the default ranges (measured).
_BUCKETS = (2.0, 3.0)


def _bucket_canvas(n: int, factor: float) -> int:
  """Static canvas side for the small side floor(n * float32(1 / f)) of any f >= factor,
  rounded up to a multiple of 16 (DiffJPEG's macroblock) but at most n. (1 / f rounds
  to float32 monotonically, and the double product is exact, as on the device.)"""
  largest = math.floor(n * float(np.float32(1) / np.float32(factor)))
  return min(n, 16 * math.ceil(largest / 16))


def apply(image: jax.Array, p: TIPParams, key: jax.Array, config: TIPConfig,
          bucketed: bool = False) -> jax.Array:
  """One example (H, W, 3) in [0, 1] -> degraded, brought back to (H, W), in [0, 1].

  Real-ESRGAN's order, which the paper's pipeline is built on: blur at full size,
  downsample, then noise and JPEG on the *small* image, 8-bit rounding (the LQ as a
  stored image would be), and bicubic back to (H, W), as a user's "Upsample to Fx"
  input is at inference. The small image has a traced size, so it lives at the
  top-left of a static canvas; every op reads only that content, and the noise field
  is drawn at (H, W) and cropped, so a content pixel's noise depends on neither the
  factor nor the canvas (`noise_field`).

  Each stage is a `lax.cond` on its flag: a skipped stage returns its input exactly.
  Without downsampling the small image is the input and the bicubic step is skipped.
  The canvas is (H, W), the small image's size at factor 1, unless `bucketed` (for
  `lax.map`, where only the taken branch runs): then `lax.switch` on the factor picks
  a smaller canvas for factors >= 2 and >= 3. Under vmap every branch would run, so
  leave it off there. Both give the same image up to float32 rounding flips.
  """
  h, w = image.shape[:2]
  full = jnp.array([h, w])
  small = jnp.stack([resizing.output_size_for_scale(n, 1.0 / p.downsample) for n in (h, w)])
  keep = lambda y: y

  def blur(x):
    kernel = kernels.make_kernel(kernels.KINDS.index("iso"), kernels.KERNEL_SIZE, p.blur_sigma,
                                 p.blur_sigma, 0.0, 1.0, 0.0)
    return ops.filter2d(x, kernel)

  def noise(x):
    field = noise_field(key, image.shape)[:x.shape[0], :x.shape[1]]
    return jnp.clip(x + field * p.noise_sigma, 0.0, 1.0)

  def compress(x):   # BasicSR and Real-ESRGAN clamp before DiffJPEG
    return jpeg.diff_jpeg_content(jnp.clip(x, 0.0, 1.0), p.jpeg_quality, small)

  def degrade_small(x):
    x = lax.cond(p.jpeg_on, compress, keep, lax.cond(p.noise_on, noise, keep, x))
    return ops.quantize_uint8(x)

  def down(canvas):
    return lambda x: resizing.resize(x, full, small, config.down_mode, canvas,
                                     max_ratio=config.downsample[1])

  def up(x):
    return jnp.clip(resizing.resize(x, small, full, config.up_mode, (h, w)), 0.0, 1.0)

  x = lax.cond(p.blur_on, blur, keep, image)
  if not bucketed:
    x = degrade_small(lax.cond(p.down_on, down((h, w)), keep, x))
    return lax.cond(p.down_on, up, keep, x)
  canvases = [(h, w)] + [(_bucket_canvas(h, f), _bucket_canvas(w, f)) for f in _BUCKETS]
  branches = [degrade_small] + [lambda x, c=c: up(degrade_small(down(c)(x))) for c in canvases]
  bucket = 1 + sum((p.downsample >= f).astype(jnp.int32) for f in _BUCKETS)
  return lax.switch(jnp.where(p.down_on, bucket, 0), branches, x)


def noise_field(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """The N(0, 1) field `apply` scales by sigma: drawn at the input's (H, W, 3) and
  cropped to the canvas, so tests (and anyone reproducing an example) can rebuild it
  from the example's key."""
  return jax.random.normal(key, shape, jnp.float32)

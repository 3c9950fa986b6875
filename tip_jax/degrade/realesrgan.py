"""Real-ESRGAN's second-order degradation, per example, with static shapes.

Real-ESRGAN (`feed_data`) draws one resize scale, noise type and JPEG order per
*batch*; here every example draws its own (tip_jax mixes the pipelines per example by default),
from the same distributions. Sizes are computed on the host with PyTorch's own
arithmetic (`floor(H * s)` for a scale factor, `int(H / 4 * s)` for the second
resize), and random-size images live at the top-left of fixed canvases:

    S x S  --blur, resize(s1)-->  C1 canvas  --noise, JPEG, blur, resize(size2)-->
    C2 canvas  --noise, [resize to S/4 + sinc, JPEG] in either order-->  S/4 x S/4
    --8-bit rounding, bicubic back to S x S (as ControlNet-SR models need)-->  S x S

Every op reads only the content (reflect padding and Poisson levels at the content
edge, JPEG on a zero-filled canvas), so the content pixels equal the reference's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tip_jax.degrade import jpeg, kernels, ops, resizing
from tip_jax.degrade import noise as noise_lib

MODES = ("area", "bilinear", "bicubic")   # index = resizing.AREA / BILINEAR / BICUBIC


@dataclasses.dataclass(frozen=True)
class RealESRGANConfig:
  """Option values; defaults are options/train_realesrgan_x4plus.yml."""

  kernel_list: tuple[str, ...] = ("iso", "aniso", "generalized_iso", "generalized_aniso",
                                  "plateau_iso", "plateau_aniso")
  kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  sinc_prob: float = 0.1
  blur_sigma: tuple[float, float] = (0.2, 3.0)
  betag_range: tuple[float, float] = (0.5, 4.0)
  betap_range: tuple[float, float] = (1.0, 2.0)
  resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)   # up, down, keep
  resize_range: tuple[float, float] = (0.15, 1.5)
  gaussian_noise_prob: float = 0.5
  noise_range: tuple[float, float] = (1.0, 30.0)               # sigma in 0..255 units
  poisson_scale_range: tuple[float, float] = (0.05, 3.0)
  gray_noise_prob: float = 0.4
  jpeg_range: tuple[float, float] = (30.0, 95.0)
  second_blur_prob: float = 0.8
  sinc_prob2: float = 0.1
  blur_sigma2: tuple[float, float] = (0.2, 1.5)
  betag_range2: tuple[float, float] = (0.5, 4.0)
  betap_range2: tuple[float, float] = (1.0, 2.0)
  resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
  resize_range2: tuple[float, float] = (0.3, 1.2)
  gaussian_noise_prob2: float = 0.5
  noise_range2: tuple[float, float] = (1.0, 25.0)
  poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
  gray_noise_prob2: float = 0.4
  jpeg_range2: tuple[float, float] = (30.0, 95.0)
  final_sinc_prob: float = 0.8
  scale: int = 4
  usm: bool = True              # degrade the USM-sharpened image, as gt_usm=True does

  @classmethod
  def x4plus(cls) -> "RealESRGANConfig":
    return cls()

  @classmethod
  def stablesr(cls) -> "RealESRGANConfig":
    """StableSR's milder values (configs/stableSRNew/v2-finetune_text_T_512.yaml)."""
    return cls(blur_sigma=(0.2, 1.5), betag_range=(0.5, 2.0), betap_range=(1.0, 1.5),
               resize_range=(0.3, 1.5), noise_range=(1.0, 15.0), poisson_scale_range=(0.05, 2.0),
               jpeg_range=(60.0, 95.0), second_blur_prob=0.5, blur_sigma2=(0.2, 1.0),
               betag_range2=(0.5, 2.0), betap_range2=(1.0, 1.5), resize_range2=(0.6, 1.2),
               noise_range2=(1.0, 12.0), poisson_scale_range2=(0.05, 1.0),
               jpeg_range2=(60.0, 100.0))

  def canvases(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Static canvas shapes after the first and second resize (multiples of 16)."""
    up = lambda n: 16 * math.ceil(n / 16)
    c1 = tuple(up(math.floor(n * self.resize_range[1])) for n in (h, w))
    c2 = tuple(up(int(n / self.scale * self.resize_range2[1])) for n in (h, w))
    return c1, c2


class StageParams(NamedTuple):
  """One degradation round (per-example arrays)."""

  blur_on: np.ndarray
  kernel: dict[str, np.ndarray]
  size: np.ndarray          # (B, 2) int32 content size after the resize
  scale: np.ndarray         # resize scale factor (stage 1 maps coordinates with it)
  mode: np.ndarray          # index into MODES
  poisson: np.ndarray       # Poisson (True) or Gaussian noise
  sigma: np.ndarray         # Gaussian sigma, [0, 1] units
  poisson_scale: np.ndarray
  gray: np.ndarray
  quality: np.ndarray       # JPEG quality


class RealESRGANParams(NamedTuple):
  first: StageParams
  second: StageParams
  sinc_first: np.ndarray    # final order: [resize + sinc] then JPEG, or JPEG first
  final_mode: np.ndarray
  final_kernel: dict[str, np.ndarray]


def _resize_draw(rng: np.random.Generator, prob, limits) -> float:
  kind = rng.choice(3, p=np.asarray(prob) / np.sum(prob))
  return (rng.uniform(1, limits[1]), rng.uniform(limits[0], 1), 1.0)[kind]


def _stage(rng, c: RealESRGANConfig, second: bool, hw: tuple[int, int]) -> dict:
  suffix = "2" if second else ""
  opt = lambda name: getattr(c, name + suffix)
  kernel = kernels.sample_blur_kernel(
      rng, c.kernel_list, c.kernel_prob, opt("blur_sigma"), opt("betag_range"),
      opt("betap_range"), c.sinc_prob2 if second else c.sinc_prob)
  blur_on = rng.random() < c.second_blur_prob if second else True
  # float32 from the start: the device maps coordinates with exactly this value.
  scale = float(np.float32(_resize_draw(rng, opt("resize_prob"), opt("resize_range"))))
  if second:   # F.interpolate(size=(int(H / 4 * s), ...)), in Python floats
    size = [int(n / c.scale * scale) for n in hw]
  else:        # F.interpolate(scale_factor=s): floor(H * s) in double precision
    size = [math.floor(n * scale) for n in hw]
  return dict(blur_on=blur_on, kernel=kernel, size=size, scale=scale,
              mode=int(rng.integers(3)), poisson=rng.random() >= opt("gaussian_noise_prob"),
              sigma=rng.uniform(*opt("noise_range")) / 255.0,
              poisson_scale=rng.uniform(*opt("poisson_scale_range")),
              gray=rng.random() < opt("gray_noise_prob"), quality=rng.uniform(*opt("jpeg_range")))


def sample(rng: np.random.Generator, config: RealESRGANConfig, hw: tuple[int, int]) -> dict:
  """One example's draws (plain Python values); `to_arrays` stacks a batch of them."""
  return dict(first=_stage(rng, config, False, hw), second=_stage(rng, config, True, hw),
              sinc_first=rng.random() < 0.5, final_mode=int(rng.integers(3)),
              final_kernel=kernels.sample_final_sinc(rng, config.final_sinc_prob))


def to_arrays(draws: list[dict]) -> RealESRGANParams:
  def stage(key: str) -> StageParams:
    rows = [d[key] for d in draws]
    col = lambda f, dtype: np.asarray([r[f] for r in rows], dtype)
    return StageParams(blur_on=col("blur_on", bool),
                       kernel=kernels.stack_kernels([r["kernel"] for r in rows]),
                       size=col("size", np.int32), scale=col("scale", np.float32),
                       mode=col("mode", np.int32), poisson=col("poisson", bool),
                       sigma=col("sigma", np.float32),
                       poisson_scale=col("poisson_scale", np.float32),
                       gray=col("gray", bool), quality=col("quality", np.float32))

  return RealESRGANParams(
      first=stage("first"), second=stage("second"),
      sinc_first=np.asarray([d["sinc_first"] for d in draws], bool),
      final_mode=np.asarray([d["final_mode"] for d in draws], np.int32),
      final_kernel=kernels.stack_kernels([d["final_kernel"] for d in draws]))


def _noise(x, key, p: StageParams, size, field):
  gauss = lambda: noise_lib.gaussian_noise(x, key, p.sigma, p.gray, field)
  poisson = lambda: noise_lib.poisson_noise(x, key, p.poisson_scale, p.gray, size, field=field)
  return jnp.clip(lax.cond(p.poisson, poisson, gauss), 0.0, 1.0)


def apply(image: jax.Array, p: RealESRGANParams, key: jax.Array,
          config: RealESRGANConfig, bucketed: bool = False) -> jax.Array:
  """One example (H, W, 3) in [0, 1] -> the LQ image brought back to (H, W), in [0, 1]."""
  return upsample(apply_lq(image, p, key, config, bucketed), image.shape[:2])


def apply_lq(image: jax.Array, p: RealESRGANParams, key: jax.Array,
             config: RealESRGANConfig, bucketed: bool = False) -> jax.Array:
  """One example (H, W, 3) in [0, 1] -> the (H/s, W/s) LQ image, on the 8-bit grid.

  Alternatives (noise type, second blur, final order) are `lax.cond`s: under vmap
  they become selects that compute both sides, under `lax.map` only the taken side
  runs. `bucketed` (for `lax.map`) also runs the rest of the chain on an (H, W)
  canvas unless the first resize upscales, instead of always on the larger canvas.
  """
  h, w = image.shape[:2]
  c1, c2 = config.canvases(h, w)
  k1, k2 = jax.random.split(key)
  x = ops.usm_sharp(image) if config.usm else image
  x = ops.filter2d(x, kernels.make_kernel(**p.first.kernel))
  rest = lambda canvas: lambda: _after_first_blur(x, p, (k1, k2), config, canvas, c1, c2)
  if not bucketed:
    return rest(c1)()
  small = tuple(16 * math.ceil(n / 16) for n in (h, w))
  return lax.cond(p.first.scale > 1.0, rest(c1), rest(small))


def upsample(lq: jax.Array, size: tuple[int, int]) -> jax.Array:
  """The LQ brought back to `size` with PyTorch's bicubic, clipped to [0, 1]: the input
  a ControlNet-SR model is given for it (in training and in the benchmark sets)."""
  small = jnp.array(lq.shape[:2])
  return jnp.clip(resizing.resize(lq, small, jnp.array(size), resizing.BICUBIC, tuple(size)),
                  0.0, 1.0)


def _after_first_blur(x, p: RealESRGANParams, keys, config: RealESRGANConfig,
                      canvas: tuple[int, int], c1: tuple[int, int],
                      c2: tuple[int, int]) -> jax.Array:
  """The chain after the first blur, up to the 8-bit LQ; `canvas` (<= c1) holds the first
  resize's output, the noise is drawn on c1 whatever the canvas, so both buckets give
  the same image."""
  h, w = x.shape[:2]
  final = (h // config.scale, w // config.scale)
  make = lambda k: kernels.make_kernel(**k)
  full = jnp.array([h, w])
  # The largest content ratios the draws allow size `resize`'s area windows on a CPU.
  x = resizing.resize(x, full, p.first.size, p.first.mode, canvas, scale=p.first.scale,
                      max_ratio=1.0 / config.resize_range[0])
  x = _noise(x, keys[0], p.first, p.first.size, c1)
  x = jpeg.diff_jpeg_content(x, p.first.quality, p.first.size)
  # Second round, on the first canvas.
  x = lax.cond(p.second.blur_on,
               lambda: ops.filter2d(x, make(p.second.kernel), size=p.first.size), lambda: x)
  x = resizing.resize(x, p.first.size, p.second.size, p.second.mode, c2,
                      max_ratio=config.scale * config.resize_range[1] / config.resize_range2[0])
  x = _noise(x, keys[1], p.second, p.second.size, c2)
  # Final sinc filter, JPEG and the resize to H/4 in one of two orders.
  to_final = lambda y, size: resizing.resize(y, size, jnp.array(final), p.final_mode, final,
                                            max_ratio=config.resize_range2[1])
  sinc = make(p.final_kernel)
  sinc_then_jpeg = lambda: jpeg.diff_jpeg_content(
      jnp.clip(ops.filter2d(to_final(x, p.second.size), sinc), 0, 1), p.second.quality,
      jnp.array(final))
  jpeg_then_sinc = lambda: ops.filter2d(
      to_final(jpeg.diff_jpeg_content(x, p.second.quality, p.second.size), p.second.size), sinc)
  return ops.quantize_uint8(lax.cond(p.sinc_first, sinc_then_jpeg, jpeg_then_sinc))

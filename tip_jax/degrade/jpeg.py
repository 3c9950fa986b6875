"""BasicSR's DiffJPEG (`differentiable=False`) in pure JAX, per-example quality.

Real-ESRGAN-style degradation pipelines compress with BasicSR's `DiffJPEG`, not
libjpeg, so matching it (rather than a "real" JPEG codec) is what reproduces the
training distribution. Its quirks are kept on purpose: the quality factor scales
the tables without libjpeg's integer rounding or [1, 255] clamp, the colour
transform and the pixels are never rounded to integers, chroma is pooled by 2x2
averages and upsampled by nearest repetition, and the luma table is the Annex-K
table transposed (BasicSR builds it with `.T`, so the divisor for vertical
frequency u and horizontal frequency v is spec[v][u]).

Static canvas: every 16x16 macroblock (8x8 luma blocks, 2x2-pooled chroma
blocks) is compressed independently and blocks are anchored at the top-left. So
content of size HxW at the top-left of a larger zero-filled canvas gets the same
arithmetic as BasicSR applies to the content alone (it zero-pads to multiples of
16): the extra canvas only adds all-zero macroblocks. Random-size images can thus
share one fixed, jit-friendly canvas. (Results agree to ~2e-7, not bitwise: XLA
vectorises differently per shape.)

Everything stays in float32 and follows BasicSR's operation order (table times
factor, then a true division; scale after the cosine sum), so round() sees the
same values up to float32 last-bit differences in the sums. Those can still send
a coefficient lying within ~1e-3 / (table * factor) of a .5 tie the other way
(about 1 in 3M coefficients on random images), which moves one block by one step.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from tip_jax.degrade.ops import SizeLike, content_mask

Array = jax.Array

# The example tables of the JPEG standard (ITU-T T.81 Annex K), row-major: vertical
# frequency u, horizontal frequency v. libjpeg scales these by quality, and
# `tip_jax.estimate.jpeg_quality` inverts that for JPEG files.
ANNEX_K_LUMA = np.array(
    [[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
     [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
     [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
     [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]],
    dtype=np.float32)
ANNEX_K_CHROMA = np.full((8, 8), 99, dtype=np.float32)
ANNEX_K_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99],
                          [47, 66, 99, 99]]
# The tables exactly as BasicSR stores them (the luma one transposed).
_Y_TABLE = ANNEX_K_LUMA.T
_C_TABLE = ANNEX_K_CHROMA.T

# _COS[u, x] = cos((2x + 1) u pi / 16): row u is frequency, column x is position.
_COS = np.cos((2 * np.arange(8)[None, :] + 1) * np.arange(8)[:, None] * np.pi / 16).astype(np.float32)
_ALPHA = np.array([1. / np.sqrt(2)] + [1.] * 7)
# BasicSR forms these in float64 and casts once; so do we.
_DCT_SCALE = (np.outer(_ALPHA, _ALPHA) * 0.25).astype(np.float32)
_IDCT_ALPHA = np.outer(_ALPHA, _ALPHA).astype(np.float32)


def _div(x: Array, d: Array | float) -> Array:
  """x / d, correctly rounded per element like torch's broadcasting division.

  Under jit, XLA rewrites A / broadcast(B) into A * broadcast(1 / B) (10 / 100 ->
  0.099999994 rather than 0.1). That 1-ulp change in the quantisation step moves
  round() at near-ties away from BasicSR, so the divisor is materialised at full
  shape behind an optimization barrier, which keeps a true division.
  """
  d = jnp.broadcast_to(jnp.asarray(d, jnp.float32), jnp.shape(x))
  return x / jax.lax.optimization_barrier(d)


def quality_to_factor(quality: Array) -> Array:
  """Table scale for a JPEG quality, in BasicSR's float32 operation order.

  q < 50: 50/q (computed as 5000/q/100); else 2 - 0.02 q (as (200 - 2q)/100).
  q = 100 gives factor 0 and a division by zero, as in BasicSR.
  """
  quality = jnp.asarray(quality, jnp.float32)
  return _div(jnp.where(quality < 50, 5000. / quality, 200. - quality * 2.), 100.)


def _jpeg_plane(plane: Array, table: Array) -> Array:
  """Compresses and decompresses planes (B, C, H, W), H and W multiples of 8.

  `table`: the scaled quantisation table per example, (B, 1, 1, 1, 8, 8). The 8x8
  DCT is C @ block @ C^T on a block-split view: two 8-term contractions instead
  of one 64x64, cheap on CPU and MXU-shaped.
  """
  b, c, h, w = plane.shape
  blocks = plane.reshape(b, c, h // 8, 8, w // 8, 8) - 128.
  cos = jnp.asarray(_COS)
  hp = jax.lax.Precision.HIGHEST
  # coef[u, v] = sum_x sum_y block[x, y] cos_ux cos_vy, x the row within the block.
  coef = jnp.einsum("bcixjy,vy->bcixjv", blocks, cos, precision=hp)
  coef = jnp.einsum("bcixjv,ux->bciujv", coef, cos, precision=hp)
  coef = coef.transpose(0, 1, 2, 4, 3, 5) * _DCT_SCALE  # (b, c, i, j, u, v)
  coef = jnp.round(_div(coef, table)) * table
  coef = coef * _IDCT_ALPHA
  # pixel[x, y] = 1/4 sum_u sum_v alpha alpha coef[u, v] cos_ux cos_vy + 128.
  pix = jnp.einsum("bcijuv,vy->bcijuy", coef, cos, precision=hp)
  pix = jnp.einsum("bcijuy,ux->bcixjy", pix, cos, precision=hp)
  return (0.25 * pix + 128.).reshape(b, c, h, w)


def diff_jpeg(images: Array, quality: Array) -> Array:
  """JPEG-compresses a batch like BasicSR's `DiffJPEG(differentiable=False)`.

  images: float32 (B, H, W, 3) RGB in [0, 1]. quality: (B,) JPEG qualities in
  (0, 100), may be traced. Returns float32 (B, H, W, 3) in [0, 1]. Shapes are
  static; H and W need not be multiples of 16 (zero padding is cropped back).
  """
  images = jnp.asarray(images, jnp.float32)
  b, h, w, _ = images.shape
  ph, pw = -h % 16, -w % 16
  x = jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0))) * 255.
  r, g, bl = x[..., 0], x[..., 1], x[..., 2]
  y = r * 0.299 + g * 0.587 + bl * 0.114
  cb = r * -0.168736 + g * -0.331264 + bl * 0.5 + 128.
  cr = r * 0.5 + g * -0.418688 + bl * -0.081312 + 128.
  # 4:2:0 by 2x2 average pooling, summed in avg_pool2d's row-major order.
  hh, hw = (h + ph) // 2, (w + pw) // 2
  cc = jnp.stack([cb, cr], axis=1).reshape(b, 2, hh, 2, hw, 2)
  cc = (cc[:, :, :, 0, :, 0] + cc[:, :, :, 0, :, 1] + cc[:, :, :, 1, :, 0] + cc[:, :, :, 1, :, 1]) / 4.

  factor = quality_to_factor(quality).reshape(b, 1, 1, 1, 1, 1)
  y = _jpeg_plane(y[:, None], jnp.asarray(_Y_TABLE) * factor)[:, 0]
  cc = _jpeg_plane(cc, jnp.asarray(_C_TABLE) * factor)
  cc = jnp.repeat(jnp.repeat(cc, 2, axis=2), 2, axis=3)  # nearest 2x2 upsampling
  cb, cr = cc[:, 0] - 128., cc[:, 1] - 128.
  rgb = jnp.stack([y + cr * 1.402,
                   y + cb * -0.344136 + cr * -0.714136,
                   y + cb * 1.772], axis=-1)
  return _div(jnp.clip(rgb, 0., 255.), 255.)[:, :h, :w]


def diff_jpeg_content(image: Array, quality: Array, size: SizeLike) -> Array:
  """`diff_jpeg` of one example's top-left `size` content of an (H, W, 3) canvas.

  BasicSR zero-pads an image to multiples of 16 (constant 0, not reflect or
  replicate); zeroing the canvas outside the content reproduces that padding, and
  the rest of the canvas only adds all-zero macroblocks, so the content pixels are
  what DiffJPEG gives for the cropped content. `quality` is a scalar (may be traced);
  pixels outside the content come back as don't care.
  """
  masked = jnp.where(content_mask(image.shape, size), image, 0.0)
  return diff_jpeg(masked[None], jnp.asarray(quality)[None])[0]

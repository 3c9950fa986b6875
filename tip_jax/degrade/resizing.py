"""`F.interpolate` on canvases: content of traced size in, content of traced size out.

See `tip_jax.degrade.ops` for the canvas convention. Each resize is two separable
interpolation matrices built from the traced sizes (area, bilinear and bicubic are
all built and one is selected, as the mode is traced too).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from jax import lax

from tip_jax.degrade.ops import Array, SizeLike, content_mask, content_size

# Interpolation modes of `resize` (traced ints select among them).
AREA, BILINEAR, BICUBIC = 0, 1, 2
_CUBIC_A = -0.75  # PyTorch's bicubic coefficient (OpenCV's too; Keys' classic is -0.5)




def output_size_for_scale(size: Array | int, scale: Array | float) -> Array:
  """floor(size * scale) exactly as PyTorch computes it, for a float32 `scale`.

  PyTorch sizes an `F.interpolate(scale_factor=s)` output as floor(double(n) * s)
  (`_sym_int(n * s)` in Python for 'area', `floor(double * double)` in C++
  otherwise), and a double product of an int < 2^12 and a float32 is exact. A
  float32 product is not: e.g. n * s can round up onto an integer that the exact
  product falls just short of, giving one pixel too many. Without x64 we redo the
  exact product in int32: s = m * 2^-S (24-bit mantissa m), split m = mh * 2^12 + ml
  so that n * mh and n * ml fit in 24 bits, and floor-divide in two steps.

  Exact for integer 0 <= n < 4096 and normal float32 2^-7 <= s < 2^11 (every
  degradation scale); outside that range it falls back to floor(float32(n * s)).
  The host should pass the very float32 value it hands to `resize`; a PyTorch
  reference must be given float(that float32), not the original double.
  """
  n = jnp.asarray(size, jnp.int32)
  s = jnp.asarray(scale, jnp.float32)
  bits = lax.bitcast_convert_type(s, jnp.int32)
  biased_exp = (bits >> 23) & 0xFF
  mant = (bits & 0x7FFFFF) | 0x800000
  shift = 150 - biased_exp                              # s = mant * 2^-shift
  ok = (shift >= 12) & (shift <= 30) & (n >= 0) & (n < 4096)
  shift_c = jnp.clip(shift, 12, 30)
  hi, lo = n * (mant >> 12), n * (mant & 0xFFF)         # n*mant = hi*2^12 + lo
  t = shift_c - 12
  q_hi = hi >> t
  r_hi = hi & ((1 << t) - 1)
  exact = q_hi + (((r_hi << 12) + lo) >> shift_c)
  approx = jnp.floor(n.astype(jnp.float32) * s).astype(jnp.int32)
  return jnp.where(ok, exact, approx)


def _area_matrix(n_in: Array, n_out: Array, rows: int, cols: int) -> Array:
  """`adaptive_avg_pool` as a matrix: output i averages [floor(i n/m), ceil((i+1) n/m))."""
  i = jnp.arange(rows, dtype=jnp.int32)[:, None]
  j = jnp.arange(cols, dtype=jnp.int32)[None, :]
  m = jnp.maximum(n_out, 1)
  start = (i * n_in) // m
  end = ((i + 1) * n_in + m - 1) // m
  inside = (j >= start) & (j < end) & (i < n_out)
  return jnp.where(inside, 1.0 / jnp.maximum(end - start, 1).astype(jnp.float32), 0.0)


def _source_coords(ratio: Array, rows: int) -> Array:
  """align_corners=False source coordinate, computed in float32 as PyTorch's CPU
  kernels do for float32 data: ratio * (dst + 0.5) - 0.5."""
  dst = jnp.arange(rows, dtype=jnp.float32)
  return ratio * (dst + 0.5) - 0.5


def _linear_matrix(n_in: Array, n_out: Array, ratio: Array, rows: int, cols: int) -> Array:
  """Bilinear weights of one axis (PyTorch `upsample_bilinear2d`, align_corners=False).

  Source coordinates below 0 are clamped to 0, the right neighbour is clamped to
  the last content pixel, and equal input/output sizes copy (PyTorch's special
  case: it holds even when a scale_factor != 1 was given, e.g. 400 * 1.001).
  """
  src = jnp.maximum(_source_coords(ratio, rows), 0.0)
  i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
  lam = jnp.clip(src - i0.astype(jnp.float32), 0.0, 1.0)
  i1 = i0 + (i0 < n_in - 1).astype(jnp.int32)
  copy = n_in == n_out
  out_idx = jnp.arange(rows, dtype=jnp.int32)
  i0 = jnp.where(copy, out_idx, i0)
  i1 = jnp.where(copy, out_idx, i1)
  lam = jnp.where(copy, 0.0, lam)
  j = jnp.arange(cols, dtype=jnp.int32)[None, :]
  a = ((j == i0[:, None]) * (1.0 - lam)[:, None] + (j == i1[:, None]) * lam[:, None])
  return jnp.where((out_idx < n_out)[:, None], a, 0.0)


def _cubic_matrix(n_in: Array, n_out: Array, ratio: Array, rows: int, cols: int) -> Array:
  """Bicubic weights of one axis (PyTorch `upsample_bicubic2d`, align_corners=False).

  No clamping of the source coordinate; taps floor(src)-1 .. floor(src)+2 are clamped
  into [0, n_in) (so border weights pile up on the edge pixel), and no copy special
  case: PyTorch resamples even when input and output sizes are equal.
  """
  a_ = _CUBIC_A
  src = _source_coords(ratio, rows)
  i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
  t = jnp.clip(src - i0.astype(jnp.float32), 0.0, 1.0)
  near = lambda x: ((a_ + 2.0) * x - (a_ + 3.0)) * x * x + 1.0          # |x| <= 1
  far = lambda x: ((a_ * x - 5.0 * a_) * x + 8.0 * a_) * x - 4.0 * a_     # 1 < |x| < 2
  weights = (far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t))
  j = jnp.arange(cols, dtype=jnp.int32)[None, :]
  a = jnp.zeros((rows, cols), jnp.float32)
  for tap, wgt in enumerate(weights):
    idx = jnp.clip(i0 + tap - 1, 0, n_in - 1)
    a = a + (j == idx[:, None]) * wgt[:, None]
  out_idx = jnp.arange(rows, dtype=jnp.int32)
  return jnp.where((out_idx < n_out)[:, None], a, 0.0)


def interp_matrix(n_in: Array, n_out: Array, mode: Array, rows: int, cols: int,
                  scale: Array | None = None) -> Array:
  """(rows, cols) matrix mapping an input axis of content length n_in (on a canvas of
  `cols`) to an output axis of content length n_out (on a canvas of `rows`).

  Rows >= n_out and columns >= n_in are zero. All three modes are built (they are
  small) and `mode` selects, so mode may be a traced per-example value.

  `scale` (PyTorch's scale_factor) changes only the bilinear/bicubic coordinate
  mapping: src = (dst + 0.5) / scale - 0.5 instead of the size ratio n_in / n_out.
  'area' always uses the sizes (PyTorch recomputes area from the output size).
  """
  n_in = jnp.asarray(n_in, jnp.int32)
  n_out = jnp.asarray(n_out, jnp.int32)
  if scale is None:
    ratio = n_in.astype(jnp.float32) / jnp.maximum(n_out, 1).astype(jnp.float32)
  else:
    scale = jnp.asarray(scale, jnp.float32)
    size_ratio = n_in.astype(jnp.float32) / jnp.maximum(n_out, 1).astype(jnp.float32)
    ratio = jnp.where(scale > 0, 1.0 / scale, size_ratio)  # PyTorch ignores scale <= 0
  mode = jnp.asarray(mode, jnp.int32)
  area = _area_matrix(n_in, n_out, rows, cols)
  linear = _linear_matrix(n_in, n_out, ratio, rows, cols)
  cubic = _cubic_matrix(n_in, n_out, ratio, rows, cols)
  return jnp.where(mode == AREA, area, jnp.where(mode == BILINEAR, linear, cubic))


def resize(image: Array, in_size: SizeLike, out_size: SizeLike, mode: Array | int,
           out_canvas: Sequence[int], scale: Array | float | None = None,
           precision=lax.Precision.HIGHEST) -> Array:
  """`F.interpolate` of the content of a canvas onto another canvas.

  Args:
    image: (H, W, C) canvas whose top-left `in_size` (traced h, w) is the content.
    in_size: (h, w) of the input content.
    out_size: (h', w') of the output content (traced). With a scale factor, pass
      `output_size_for_scale(in_size, scale)`, which matches PyTorch's rounding.
    mode: AREA (0), BILINEAR (1) or BICUBIC (2); may be traced.
    out_canvas: static (H', W') of the returned canvas, >= out_size.
    scale: None to map coordinates by the size ratio (F.interpolate(size=...)), or
      the scale factor (scalar, or a (scale_h, scale_w) pair) to map them by 1/scale
      as F.interpolate(scale_factor=s) does (recompute_scale_factor unset). This
      differs from the size ratio whenever n * s is not an integer.
    precision: of the two matmuls; HIGHEST keeps accelerators off bf16/TF32.

  Returns:
    (H', W', C) canvas with the resized content at the top-left and zeros elsewhere.
    The input's non-content pixels are masked out first, so they cannot leak in.
  """
  in_h, in_w = content_size(in_size, image.shape)
  out_h, out_w = content_size(out_size, out_canvas)
  if scale is None:
    scale_h = scale_w = None
  else:
    scale = jnp.asarray(scale, jnp.float32)
    scale_h, scale_w = (scale, scale) if scale.ndim == 0 else (scale[0], scale[1])
  rows_h, cols_h = int(out_canvas[0]), image.shape[0]
  rows_w, cols_w = int(out_canvas[1]), image.shape[1]
  a_h = interp_matrix(in_h, out_h, mode, rows_h, cols_h, scale_h)
  a_w = interp_matrix(in_w, out_w, mode, rows_w, cols_w, scale_w)
  x = jnp.where(content_mask(image.shape, (in_h, in_w)), image, 0).astype(jnp.float32)
  # Contract the axis whose pass is cheaper first (static shapes, so a trace-time choice).
  cost_h_first = rows_h * cols_h * cols_w + rows_h * cols_w * rows_w
  cost_w_first = cols_h * cols_w * rows_w + rows_h * cols_h * rows_w
  if cost_h_first <= cost_w_first:
    y = jnp.einsum("oi,ijc->ojc", a_h, x, precision=precision)
    y = jnp.einsum("pj,ojc->opc", a_w, y, precision=precision)
  else:
    y = jnp.einsum("pj,ijc->ipc", a_w, x, precision=precision)
    y = jnp.einsum("oi,ipc->opc", a_h, y, precision=precision)
  return y.astype(image.dtype)


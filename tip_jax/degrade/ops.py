"""Image ops of the Real-ESRGAN degradation chain, per example and with static shapes.

TIP degrades every training example with its own random parameters inside a jitted,
vmapped train step, so no shape may depend on a random draw. An image of random size
therefore lives on a fixed-size *canvas*: a static (H, W, C) array whose top-left
(h, w) block, with h and w traced int32 values, is the real content. Pixels outside
the content are "don't care" unless a function says otherwise. Every op below reads
content pixels only (reflect padding, interpolation weights and Poisson levels are
all taken at the content edge), so the content it returns equals what BasicSR /
PyTorch compute on the cropped content.

All functions take one example (H, W, C) float32; vmap them for a batch. They are
pure JAX (no host callbacks), so they jit, vmap and shard like any other op.

Conventions mirrored (BasicSR 1.4.2, PyTorch `F.interpolate` / `F.pad` semantics):
- `filter2d`: BasicSR `filter2D` = cross-correlation after `F.pad(mode='reflect')`
  (edge pixel not repeated).
- `resize`: `F.interpolate` with align_corners=False and no antialias; 'area' is
  `adaptive_avg_pool2d`; bicubic uses A = -0.75 and clamps source indices.
- Noise: BasicSR's `generate_gaussian_noise_pt` / `generate_poisson_noise_pt`.
- `usm_sharp`: BasicSR's `USMSharp` module.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
SizeLike = Array | Sequence[int] | Sequence[Array]

# Interpolation modes of `resize` (traced ints select among them).
AREA, BILINEAR, BICUBIC = 0, 1, 2
_CUBIC_A = -0.75  # PyTorch's bicubic coefficient (OpenCV's too; Keys' classic is -0.5)


# ----------------------------------------------------------------------------------
# Canvas helpers
# ----------------------------------------------------------------------------------


def _size_or_full(size: SizeLike | None, shape: Sequence[int]) -> tuple[Array, Array]:
  """(h, w) as int32 scalars; None means the whole canvas is content."""
  if size is None:
    return jnp.int32(shape[0]), jnp.int32(shape[1])
  return jnp.asarray(size[0], jnp.int32), jnp.asarray(size[1], jnp.int32)


def content_mask(shape: Sequence[int], size: SizeLike) -> Array:
  """Boolean (H, W, 1) mask of the top-left (h, w) content of an (H, W, ...) canvas."""
  h, w = _size_or_full(size, shape)
  rows = jnp.arange(shape[0])[:, None, None] < h
  cols = jnp.arange(shape[1])[None, :, None] < w
  return rows & cols


def _reflect_indices(length: int, pad: int, n: Array) -> Array:
  """Source indices of a reflect-padded axis: output slot t reads index t - pad of an
  axis whose content has traced length n, mirrored about the content edges without
  repeating the edge pixel (PyTorch 'reflect' / numpy 'reflect').

  PyTorch requires pad < n; for smaller content the single reflection would leave
  [0, n) and we clip, so every index still points inside the content (never at
  don't-care canvas pixels, which may hold anything, NaN included).
  """
  x = jnp.arange(length + 2 * pad, dtype=jnp.int32) - pad
  x = jnp.abs(x)
  x = jnp.where(x > n - 1, 2 * (n - 1) - x, x)
  return jnp.clip(x, 0, jnp.maximum(n - 1, 0))


def _reflect_pad(image: Array, pad: int, h: Array, w: Array) -> Array:
  """(H, W, C) -> (H + 2p, W + 2p, C), reflect-padded at the content boundary.

  The output slots past the content read reflected content too, so the padded array
  is built only from content pixels whatever the canvas holds elsewhere.
  """
  rows = _reflect_indices(image.shape[0], pad, h)
  cols = _reflect_indices(image.shape[1], pad, w)
  return image[rows][:, cols]


# ----------------------------------------------------------------------------------
# filter2d
# ----------------------------------------------------------------------------------


def _fast_fft_length(n: int) -> int:
  """Smallest 5-smooth integer >= n: pocketfft/ducc and cuFFT are fastest on those."""
  m = n
  while True:
    r = m
    for p in (2, 3, 5):
      while r % p == 0:
        r //= p
    if r == 1:
      return m
    m += 1


def _correlate_fft(padded: Array, kernel: Array, out_hw: tuple[int, int]) -> Array:
  """Valid cross-correlation of (Hp, Wp, C) with (k, k) through rfft2.

  corr[i, j] = sum_{a,b} x[i + a, j + b] k[a, b] is the circular correlation
  irfft(X * conj(K)); with transforms at least Hp x Wp long, the outputs
  i < Hp - k + 1 never wrap, so they are the valid ones.
  """
  hp, wp, _ = padded.shape
  fh, fw = _fast_fft_length(hp), _fast_fft_length(wp)
  # FFT over the trailing axes. The barrier makes the transpose a real copy: XLA:CPU's
  # FFT only accepts row-major operands and layout assignment may otherwise hand it
  # the transposed layout (an INTERNAL RET_CHECK in fft_thunk.cc under SPMD).
  x = jax.lax.optimization_barrier(jnp.moveaxis(padded, -1, 0))
  xf = jnp.fft.rfft2(x, s=(fh, fw))
  kf = jnp.fft.rfft2(kernel.astype(padded.dtype), s=(fh, fw))
  y = jnp.fft.irfft2(xf * jnp.conj(kf), s=(fh, fw))
  y = y[:, :out_hw[0], :out_hw[1]]
  return jnp.moveaxis(y, 0, -1).astype(padded.dtype)


def _correlate_direct(padded: Array, kernel: Array, precision) -> Array:
  """Valid depthwise cross-correlation with `lax.conv_general_dilated`.

  Channels become the batch so the kernel is a single (k, k, 1, 1) filter; under vmap
  JAX turns the per-example kernel into a grouped conv.
  """
  x = jnp.moveaxis(padded, -1, 0)[..., None]            # (C, Hp, Wp, 1)
  rhs = kernel.astype(padded.dtype)[:, :, None, None]   # HWIO
  y = lax.conv_general_dilated(x, rhs, (1, 1), "VALID",
                               dimension_numbers=("NHWC", "HWIO", "NHWC"),
                               precision=precision)
  return jnp.moveaxis(y[..., 0], 0, -1)


def filter2d(image: Array, kernel: Array, size: SizeLike | None = None,
             method: str = "auto", precision=lax.Precision.HIGHEST) -> Array:
  """BasicSR `filter2D` of one image: reflect padding k//2, then cross-correlation.

  Args:
    image: (H, W, C) canvas.
    kernel: (k, k) with k odd and static (21 in Real-ESRGAN; smaller kernels are
      zero-padded to 21 by the samplers).
    size: traced (h, w) of the content, or None for the whole canvas. The padding
      reflects at the content edge, exactly as filter2D on the cropped content.
    method: "fft" (rfft2 product: on CPU ~20x faster than XLA's grouped conv for
      per-example 21x21 kernels), "direct" (`lax.conv`, for GPU/TPU), or "auto"
      (fft on a CPU default backend, direct otherwise).
    precision: matmul/conv precision of the direct path; HIGHEST keeps TPU/GPU from
      using bf16/TF32 passes (errors ~1e-3 otherwise).

  Returns:
    (H, W, C) canvas whose [0, h) x [0, w) block is the filtered content; the rest is
    don't care (it holds filtered reflected content, always finite).
  """
  k = kernel.shape[-1]
  if kernel.ndim != 2 or kernel.shape[0] != k or k % 2 != 1:
    raise ValueError(f"filter2d needs an odd square (k, k) kernel, got {kernel.shape}")
  if method == "auto":
    method = "fft" if jax.default_backend() == "cpu" else "direct"
  h, w = _size_or_full(size, image.shape)
  padded = _reflect_pad(image, k // 2, h, w)
  if method == "fft":
    return _correlate_fft(padded, kernel, image.shape[:2])
  if method == "direct":
    return _correlate_direct(padded, kernel, precision)
  raise ValueError(f"unknown filter2d method {method!r}: expected 'auto', 'fft' or 'direct'")


# ----------------------------------------------------------------------------------
# resize
# ----------------------------------------------------------------------------------


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
  in_h, in_w = _size_or_full(in_size, image.shape)
  out_h, out_w = _size_or_full(out_size, out_canvas)
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


# ----------------------------------------------------------------------------------
# Noise
# ----------------------------------------------------------------------------------


def _as_flag(gray: Array | bool | float) -> Array:
  """BasicSR's gray flag is a 0/1 float mixed as n*(1-g) + n_gray*g; only 0 and 1
  occur, so we treat it as a boolean (g > 0.5)."""
  return jnp.asarray(gray, jnp.float32) > 0.5


def gaussian_noise(image: Array, key: Array, sigma: Array | float,
                   gray: Array | bool | float) -> Array:
  """image + N(0, 1) * sigma, colour (per channel) or gray (one field for all channels).

  sigma is in [0, 1] units (BasicSR's sigma / 255). The gray field is channel 0 of
  the same draw, so one normal draw serves both variants. No clamp: the caller clips.
  (BasicSR draws one gray field per *batch*, broadcast to every sample; here each
  example has its own, which is what the per-sample sigma suggests was intended.)
  """
  n = jax.random.normal(key, image.shape, jnp.float32)
  n = jnp.where(_as_flag(gray), jnp.broadcast_to(n[..., :1], n.shape), n)
  return image + n * jnp.asarray(sigma, jnp.float32)


def _gray(image: Array) -> Array:
  """torchvision `rgb_to_grayscale` weights (ITU-R 601 with 0.2989), keeping a channel."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  return (0.2989 * r + 0.587 * g + 0.114 * b)[..., None]


def _levels_uint8(x: Array) -> Array:
  """round(x * 255) clamped to [0, 255] as int32 (half-to-even, like torch.round)."""
  return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.int32)


def _vals_from_levels(levels: Array, mask: Array) -> Array:
  """2^ceil(log2(#distinct levels over the masked pixels)), as float32.

  The distinct count uses a 256-slot presence table (a static-shape scatter: ~10x
  cheaper than sorting on CPU); non-content pixels scatter into a dropped slot 256.
  The power of two is found by comparison, not log2, which can be off by an ulp at
  exact powers of two.
  """
  idx = jnp.where(mask, levels, 256).reshape(-1)
  present = jnp.zeros((257,), jnp.int32).at[idx].max(1, mode="drop")
  count = jnp.sum(present[:256])
  powers = 2 ** jnp.arange(9, dtype=jnp.int32)            # 1 .. 256 (count <= 256)
  vals = jnp.min(jnp.where(powers >= count, powers, 512))
  return vals.astype(jnp.float32)


def poisson_levels(image: Array, size: SizeLike | None = None,
                   gray: bool | Array = False) -> Array:
  """The `vals` of BasicSR's Poisson noise for this image's content: 2^ceil(log2(U)),
  U = #unique values of clamp(round(x*255), 0, 255) over all content pixels and
  channels (or of the 0.2989/0.587/0.114 gray image when `gray`)."""
  mask = content_mask(image.shape, _size_or_full(size, image.shape))
  color = _vals_from_levels(_levels_uint8(image), jnp.broadcast_to(mask, image.shape))
  mono = _vals_from_levels(_levels_uint8(_gray(image)), mask)
  return jnp.where(_as_flag(gray), mono, color)


_POISSON_TABLE_LEN = 512  # counts 0..511: rates are <= 256, P(X >= 512 | 256) ~ 1e-40


def poisson_cdf_table(vals: Array) -> Array:
  """(256, 512) float32 CDFs of Poisson(l / 255 * vals) for every 8-bit level l.

  log pmf(k) = -lam + sum_{j<k} log(lam / (j + 1)) (a cumulative sum of logs keeps
  the float32 error small: total-variation distance to the exact pmf <= 4e-6 for
  every level at vals = 256, against 4e-5 with lgamma), then cumsum and normalise so
  the last entry is exactly 1.
  """
  lam = jnp.arange(256, dtype=jnp.float32)[:, None] / 255.0 * vals
  k = jnp.arange(1, _POISSON_TABLE_LEN, dtype=jnp.float32)[None, :]
  steps = jnp.log(jnp.maximum(lam, 1e-30)) - jnp.log(k)
  log_pmf = jnp.concatenate([jnp.zeros_like(lam), jnp.cumsum(steps, axis=-1)], -1) - lam
  first = jnp.arange(_POISSON_TABLE_LEN)[None, :] == 0
  log_pmf = jnp.where(lam > 0, log_pmf, jnp.where(first, 0.0, -jnp.inf))  # Poisson(0) = 0
  cdf = jnp.cumsum(jnp.exp(log_pmf), axis=-1)
  return cdf / cdf[:, -1:]


def _poisson_by_inversion(key: Array, levels: Array, vals: Array) -> Array:
  """Poisson(levels / 255 * vals) counts by inverting a per-level CDF table.

  `jax.random.poisson` runs a Knuth loop and a rejection loop over the whole array
  until the slowest pixel finishes (~14 s for 16 x 512^2 x 3 on a 2-core CPU). Here
  the rates take at most 256 distinct values, so one uniform per pixel and a 9-step
  binary search in that level's 512-entry CDF give an exact-in-distribution draw
  (up to the table's float32 error above) in ~40x less time.
  """
  table = poisson_cdf_table(vals).reshape(-1)
  u = jax.random.uniform(key, levels.shape, jnp.float32)
  base = levels * _POISSON_TABLE_LEN
  count = jnp.zeros(levels.shape, jnp.int32)
  step = _POISSON_TABLE_LEN // 2
  while step >= 1:                       # count = #{k : cdf[k] < u}, a lower bound search
    below = jnp.take(table, base + count + (step - 1), mode="clip") < u
    count = count + jnp.where(below, step, 0)
    step //= 2
  return count


def poisson_noise(image: Array, key: Array, scale: Array | float, gray: Array | bool | float,
                  size: SizeLike | None = None, method: str = "table") -> Array:
  """image + scale * (Poisson(q * vals) / vals - q), BasicSR `generate_poisson_noise_pt`.

  q = clamp(round(x * 255), 0, 255) / 255 of the image (colour: per channel; gray: of
  the gray image, the noise then repeated on all channels); vals = 2^ceil(log2(#unique
  q over the content)). The noise is added to the unrounded image, no clamp.
  One Poisson draw of the image's shape serves both variants (gray uses channel 0).

  method: "table" (default; CDF inversion, see `_poisson_by_inversion`) or "jax"
  (`jax.random.poisson`, ~40x slower on CPU; non-content rates are zeroed so its
  loops stay short and finite). Both sample the same distribution.
  """
  h, w = _size_or_full(size, image.shape)
  mask = content_mask(image.shape, (h, w))
  flag = _as_flag(gray)
  lv_color = _levels_uint8(image)
  lv_gray = _levels_uint8(_gray(image))
  vals_color = _vals_from_levels(lv_color, jnp.broadcast_to(mask, image.shape))
  vals_gray = _vals_from_levels(lv_gray, mask)
  levels = jnp.where(flag, jnp.broadcast_to(lv_gray, image.shape), lv_color)
  levels = jnp.where(mask, levels, 0)
  q = levels.astype(jnp.float32) / 255.0
  vals = jnp.where(flag, vals_gray, vals_color)
  if method == "table":
    counts = _poisson_by_inversion(key, levels, vals)
  elif method == "jax":
    counts = jax.random.poisson(key, q * vals, image.shape)
  else:
    raise ValueError(f"unknown poisson method {method!r}: expected 'table' or 'jax'")
  noise = counts.astype(jnp.float32) / vals - q
  noise = jnp.where(flag, jnp.broadcast_to(noise[..., :1], noise.shape), noise)
  return image + noise * jnp.asarray(scale, jnp.float32)


# ----------------------------------------------------------------------------------
# Sharpening and quantisation
# ----------------------------------------------------------------------------------


def gaussian_kernel_1d(ksize: int, sigma: float = 0.0) -> np.ndarray:
  """`cv2.getGaussianKernel(ksize, sigma)` for ksize > 7 or sigma > 0 (float64).

  sigma <= 0 means 0.3 * ((ksize - 1) / 2 - 1) + 0.8 (8.0 for ksize 51). OpenCV uses
  fixed tables for ksize <= 7 with sigma <= 0; USM never asks for those.
  """
  if sigma <= 0:
    if ksize <= 7:
      raise ValueError("ksize <= 7 with sigma <= 0 uses OpenCV's fixed tables: unsupported")
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
  x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
  g = np.exp(-x * x / (2 * sigma * sigma))
  return g / g.sum()


def _blur_separable(image: Array, taps: np.ndarray, h: Array, w: Array) -> Array:
  """filter2d with the outer product of `taps`, as two 1-D passes.

  2-D reflect padding is separable, so padding+correlating rows then columns equals
  the 2-D version; 2 x 51 taps per pixel instead of 51^2. Each pass is a static sum
  of shifted slices, which XLA fuses into one loop.
  """
  k = len(taps)
  p = k // 2
  taps = [float(t) for t in taps.astype(np.float32)]
  x = image[_reflect_indices(image.shape[0], p, h)]
  x = sum(taps[a] * x[a:a + image.shape[0]] for a in range(k))
  x = x[:, _reflect_indices(image.shape[1], p, w)]
  return sum(taps[b] * x[:, b:b + image.shape[1]] for b in range(k))


def usm_sharp(image: Array, weight: float = 0.5, radius: int = 50, threshold: float = 10,
              size: SizeLike | None = None, method: str = "auto") -> Array:
  """BasicSR `USMSharp`: unsharp masking with a soft mask of where the residual is large.

  blur = G * img (G: 51x51 Gaussian, sigma 8, reflect pad 25); residual = img - blur;
  mask = |residual| * 255 > threshold; soft = G * mask;
  out = soft * clip(img + weight * residual, 0, 1) + (1 - soft) * img.
  `radius` and `threshold` are static Python numbers (as in Real-ESRGAN).

  method: "separable" (two 51-tap passes), "fft" (the 51x51 outer-product kernel
  through `filter2d`'s FFT: ~1.5x faster than the separable passes on CPU, since an
  FFT costs the same for any kernel size), or "auto" (fft on CPU, separable elsewhere).
  """
  if radius % 2 == 0:
    radius += 1
  taps = gaussian_kernel_1d(radius, 0.0)
  if method == "auto":
    method = "fft" if jax.default_backend() == "cpu" else "separable"
  h, w = _size_or_full(size, image.shape)
  if method == "fft":
    kernel = jnp.asarray(np.outer(taps, taps).astype(np.float32))  # BasicSR's float32 2-D kernel
    blur_fn = lambda x: filter2d(x, kernel, (h, w), method="fft")
  elif method == "separable":
    blur_fn = lambda x: _blur_separable(x, taps, h, w)
  else:
    raise ValueError(f"unknown usm method {method!r}: expected 'auto', 'fft' or 'separable'")
  blur = blur_fn(image)
  residual = image - blur
  mask = (jnp.abs(residual) * 255.0 > threshold).astype(image.dtype)
  soft = blur_fn(mask)
  sharp = jnp.clip(image + weight * residual, 0.0, 1.0)
  return soft * sharp + (1.0 - soft) * image


def quantize_uint8(image: Array) -> Array:
  """clamp(round(x * 255), 0, 255) / 255: Real-ESRGAN's final 8-bit rounding of the LQ."""
  return jnp.clip(jnp.round(image * 255.0), 0.0, 255.0) / 255.0

"""`F.interpolate` on canvases: content of traced size in, content of traced size out.

See `tip_jax.degrade.ops` for the canvas convention. Each resize is separable: per
axis, interpolation weights built from the traced sizes (for a traced mode, all three
modes' are built and one is selected), applied as a dense matrix (accelerators) or as
a few gathered taps per output pixel (CPU).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from tip_jax.degrade.ops import Array, SizeLike, content_mask, content_size

# Interpolation modes of `resize` (traced ints select among them).
AREA, BILINEAR, BICUBIC = 0, 1, 2
_CUBIC_A = -0.75  # PyTorch's bicubic coefficient (OpenCV's too; Keys' classic is -0.5)
# `resize(method="auto")` on a CPU gathers taps where the dense matrices would do this
# many times as many multiply-adds as the taps read pixels. XLA:CPU's matmuls run near
# peak and its gathers do not: at 512² on a 2-core CPU, taps were 2.1x faster at 102x
# (area 512 -> 300 px, bicubic 300 -> 512 px) and the matrices 1.2x faster at 64x
# (bicubic 200 -> 512 px on a 256² canvas).
TAPS_BREAK_EVEN = 80




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


def _area_windows(n_in: Array, n_out: Array, rows: int) -> tuple[Array, Array, Array]:
  """(output index i, window start, window end) as (rows, 1) columns: `adaptive_avg_pool`
  averages [floor(i n/m), ceil((i+1) n/m))."""
  i = jnp.arange(rows, dtype=jnp.int32)[:, None]
  m = jnp.maximum(n_out, 1)
  return i, (i * n_in) // m, ((i + 1) * n_in + m - 1) // m


def _area_matrix(n_in: Array, n_out: Array, rows: int, cols: int) -> Array:
  """`adaptive_avg_pool` as a matrix: output i averages [floor(i n/m), ceil((i+1) n/m))."""
  i, start, end = _area_windows(n_in, n_out, rows)
  j = jnp.arange(cols, dtype=jnp.int32)[None, :]
  inside = (j >= start) & (j < end) & (i < n_out)
  return jnp.where(inside, 1.0 / jnp.maximum(end - start, 1).astype(jnp.float32), 0.0)


def _area_taps(n_in: Array, n_out: Array, rows: int, taps: int) -> tuple[Array, Array]:
  """`_area_matrix` as `taps` (index, weight) pairs per output row: exact while every
  window, at most ceil(n_in / n_out) + 1 pixels long, fits in `taps`."""
  i, start, end = _area_windows(n_in, n_out, rows)
  t = jnp.arange(taps, dtype=jnp.int32)[None, :]
  weight = jnp.where((start + t < end) & (i < n_out),
                     1.0 / jnp.maximum(end - start, 1).astype(jnp.float32), 0.0)
  return jnp.minimum(start + t, n_in - 1), weight


def _source_coords(ratio: Array, rows: int) -> Array:
  """align_corners=False source coordinate, computed in float32 as PyTorch's CPU
  kernels do for float32 data: ratio * (dst + 0.5) - 0.5."""
  dst = jnp.arange(rows, dtype=jnp.float32)
  return ratio * (dst + 0.5) - 0.5


def _linear_taps(n_in: Array, n_out: Array, ratio: Array, rows: int) -> tuple[Array, Array]:
  """Bilinear (index, weight) pairs of one axis, two per output row (PyTorch
  `upsample_bilinear2d`, align_corners=False).

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
  inside = (out_idx < n_out)[:, None]
  # Rows past the output content (a copy's indices run past the input's) read pixel 0.
  return (jnp.where(inside, jnp.stack([i0, i1], 1), 0),
          jnp.where(inside, jnp.stack([1.0 - lam, lam], 1), 0.0))


def _cubic_taps(n_in: Array, n_out: Array, ratio: Array, rows: int) -> tuple[Array, Array]:
  """Bicubic (index, weight) pairs of one axis, four per output row (PyTorch
  `upsample_bicubic2d`, align_corners=False).

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
  weight = jnp.stack((far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)), 1)
  index = jnp.stack([jnp.clip(i0 + tap - 1, 0, n_in - 1) for tap in range(4)], 1)
  out_idx = jnp.arange(rows, dtype=jnp.int32)
  return index, jnp.where((out_idx < n_out)[:, None], weight, 0.0)


def _taps_matrix(index: Array, weight: Array, cols: int) -> Array:
  """(rows, T) taps -> the (rows, cols) matrix they sum to (repeated indices add up)."""
  j = jnp.arange(cols, dtype=jnp.int32)[None, :]
  return sum((j == index[:, tap, None]) * weight[:, tap, None] for tap in range(index.shape[1]))


def _ratio(n_in: Array, n_out: Array, scale: Array | None) -> Array:
  """The source/destination coordinate ratio of bilinear and bicubic: the size ratio, or
  1 / scale for PyTorch's scale_factor ('area' always uses the sizes, as PyTorch)."""
  size_ratio = n_in.astype(jnp.float32) / jnp.maximum(n_out, 1).astype(jnp.float32)
  if scale is None:
    return size_ratio
  scale = jnp.asarray(scale, jnp.float32)
  return jnp.where(scale > 0, 1.0 / scale, size_ratio)  # PyTorch ignores scale <= 0


def _modes(mode: Array | int) -> tuple[int, ...]:
  """The modes a resize may take: the one given as a Python int, or all three."""
  return (mode,) if isinstance(mode, int) else (AREA, BILINEAR, BICUBIC)


def _select(mode: Array | int, built: dict[int, Array]) -> Array:
  """Of one array per possible mode, the one `mode` names (a traced `where` if traced)."""
  if isinstance(mode, int):
    return built[mode]
  mode = jnp.asarray(mode, jnp.int32)
  return jnp.where(mode == AREA, built[AREA], jnp.where(mode == BILINEAR, built[BILINEAR],
                                                        built[BICUBIC]))


def interp_matrix(n_in: Array, n_out: Array, mode: Array | int, rows: int, cols: int,
                  scale: Array | None = None) -> Array:
  """(rows, cols) matrix mapping an input axis of content length n_in (on a canvas of
  `cols`) to an output axis of content length n_out (on a canvas of `rows`).

  Rows >= n_out and columns >= n_in are zero. A traced `mode` builds all three and
  selects (they are small), so it may be a per-example value; a Python int builds one.

  `scale` (PyTorch's scale_factor) changes only the bilinear/bicubic coordinate
  mapping: src = (dst + 0.5) / scale - 0.5 instead of the size ratio n_in / n_out.
  'area' always uses the sizes (PyTorch recomputes area from the output size).
  """
  n_in = jnp.asarray(n_in, jnp.int32)
  n_out = jnp.asarray(n_out, jnp.int32)
  ratio = _ratio(n_in, n_out, scale)
  built = {AREA: lambda: _area_matrix(n_in, n_out, rows, cols),
           BILINEAR: lambda: _taps_matrix(*_linear_taps(n_in, n_out, ratio, rows), cols),
           BICUBIC: lambda: _taps_matrix(*_cubic_taps(n_in, n_out, ratio, rows), cols)}
  return _select(mode, {m: built[m]() for m in _modes(mode)})


def interp_taps(n_in: Array, n_out: Array, mode: int, rows: int, scale: Array | None,
                area_taps: int) -> tuple[Array, Array]:
  """`interp_matrix`'s rows as (index, weight) pairs, (rows, T) each, for a static
  `mode`: output i is sum_t weight[i, t] * input[index[i, t]]. T = 2 (bilinear), 4
  (bicubic) or `area_taps`, exact while an area window (at most ceil(n_in / n_out) + 1
  pixels) fits. Indices stay inside the input's content; rows >= n_out weigh nothing."""
  n_in = jnp.asarray(n_in, jnp.int32)
  n_out = jnp.asarray(n_out, jnp.int32)
  if mode == AREA:
    return _area_taps(n_in, n_out, rows, area_taps)
  taps = _linear_taps if mode == BILINEAR else _cubic_taps
  return taps(n_in, n_out, _ratio(n_in, n_out, scale), rows)


def _area_fits(n_in: Array, n_out: Array, area_taps: int) -> Array:
  """Whether `area_taps` taps hold every area window of this axis."""
  return (n_in + jnp.maximum(n_out, 1) - 1) // jnp.maximum(n_out, 1) + 1 <= area_taps


def _gather_rows(x: Array, index: Array, weight: Array) -> Array:
  """sum_t weight[:, t] * x[index[:, t]] along axis 0 (whole rows gathered)."""
  return sum(weight[:, tap, None, None] * x[index[:, tap]] for tap in range(index.shape[1]))


def _gather_cols(x: Array, index: Array, weight: Array) -> Array:
  """The same along axis 1."""
  return sum(weight[None, :, tap, None] * x[:, index[:, tap]] for tap in range(index.shape[1]))


def resize(image: Array, in_size: SizeLike, out_size: SizeLike, mode: Array | int,
           out_canvas: Sequence[int], scale: Array | float | None = None,
           precision=lax.Precision.HIGHEST, method: str = "auto",
           max_ratio: float = 4.0) -> Array:
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
    precision: of the matrix method's matmuls; HIGHEST keeps accelerators off bf16/TF32.
    method: "matrix" (each axis a dense (out, in) matmul: what accelerators do best),
      "taps" (each output pixel the weighted sum of its 2 (bilinear), 4 (bicubic) or
      up to ceil(max_ratio) + 1 (area) gathered input pixels), or "auto": on a CPU
      default backend, per mode, taps where the matrices would do at least
      `TAPS_BREAK_EVEN` times as many multiply-adds as the taps read pixels (large
      canvases), the matrices elsewhere. Both are exact; they differ by float32
      summation order.
    max_ratio: static, for "taps" with 'area' possible: the largest input/output content
      ratio the caller expects (its sampler's range), which sizes the area windows. A
      larger ratio is still exact: that resize takes the matrix method (`lax.cond`).
      A traced mode is a `lax.switch` over the three (under `lax.map` only the taken
      one runs; under vmap all do, and their conds compute both sides).

  Returns:
    (H', W', C) canvas with the resized content at the top-left and zeros elsewhere.
    Only content pixels are read, so whatever the canvas holds elsewhere cannot leak in.
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
  if method == "auto" and jax.default_backend() != "cpu":
    method = "matrix"
  if method not in ("auto", "matrix", "taps"):
    raise ValueError(f"unknown resize method {method!r}: expected 'auto', 'matrix' or 'taps'")

  def costs(t_h: int, t_w: int) -> tuple[int, int]:
    """Multiply-adds per channel of the two passes, height first or width first, when
    each output pixel reads t_h then t_w inputs (a matrix reads its whole input axis)."""
    return (t_h * rows_h * cols_w + t_w * rows_h * rows_w,
            t_w * cols_h * rows_w + t_h * rows_h * rows_w)

  def by_matrix(image: Array, mode: Array | int = mode) -> Array:
    a_h = interp_matrix(in_h, out_h, mode, rows_h, cols_h, scale_h)
    a_w = interp_matrix(in_w, out_w, mode, rows_w, cols_w, scale_w)
    x = jnp.where(content_mask(image.shape, (in_h, in_w)), image, 0).astype(jnp.float32)
    # Contract the axis whose pass is cheaper first (static shapes: a trace-time choice).
    h_first, w_first = costs(cols_h, cols_w)
    if h_first <= w_first:
      y = jnp.einsum("oi,ijc->ojc", a_h, x, precision=precision)
      return jnp.einsum("pj,ojc->opc", a_w, y, precision=precision)
    y = jnp.einsum("pj,ijc->ipc", a_w, x, precision=precision)
    return jnp.einsum("oi,ipc->opc", a_h, y, precision=precision)

  if method == "matrix":
    return by_matrix(image).astype(image.dtype)
  area_taps = min(math.ceil(max_ratio) + 1, max(cols_h, cols_w))

  def by_taps(image: Array, mode: int) -> Array:
    taps_h = interp_taps(in_h, out_h, mode, rows_h, scale_h, area_taps)
    taps_w = interp_taps(in_w, out_w, mode, rows_w, scale_w, area_taps)
    x = image.astype(jnp.float32)
    h_first, w_first = costs(taps_h[0].shape[1], taps_w[0].shape[1])
    if h_first <= w_first:
      return _gather_cols(_gather_rows(x, *taps_h), *taps_w)
    return _gather_rows(_gather_cols(x, *taps_w), *taps_h)

  def one_mode(mode: int) -> Callable[[Array], Array]:
    if method == "auto":
      width = {AREA: area_taps, BILINEAR: 2, BICUBIC: 4}[mode]
      if min(costs(cols_h, cols_w)) < TAPS_BREAK_EVEN * min(costs(width, width)):
        return lambda image: by_matrix(image, mode)
    if mode != AREA:
      return lambda image: by_taps(image, mode)
    fits = _area_fits(in_h, out_h, area_taps) & _area_fits(in_w, out_w, area_taps)
    return lambda image: lax.cond(fits, lambda x: by_taps(x, AREA),
                                  lambda x: by_matrix(x, AREA), image)

  if isinstance(mode, int):
    return one_mode(mode)(image).astype(image.dtype)
  # A traced mode: under `lax.map` only its branch runs (under vmap, all three).
  return lax.switch(mode, [one_mode(m) for m in (AREA, BILINEAR, BICUBIC)],
                    image).astype(image.dtype)

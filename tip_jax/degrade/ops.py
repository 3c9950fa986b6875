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
- `resizing.resize`: `F.interpolate` with align_corners=False and no antialias;
  'area' is `adaptive_avg_pool2d`; bicubic uses A = -0.75 and clamps source indices.
- `noise`: BasicSR's `generate_gaussian_noise_pt` / `generate_poisson_noise_pt`.
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


# ----------------------------------------------------------------------------------
# Canvas helpers
# ----------------------------------------------------------------------------------


def content_size(size: SizeLike | None, shape: Sequence[int]) -> tuple[Array, Array]:
  """(h, w) as int32 scalars; None means the whole canvas is content."""
  if size is None:
    return jnp.int32(shape[0]), jnp.int32(shape[1])
  return jnp.asarray(size[0], jnp.int32), jnp.asarray(size[1], jnp.int32)


def content_mask(shape: Sequence[int], size: SizeLike) -> Array:
  """Boolean (H, W, 1) mask of the top-left (h, w) content of an (H, W, ...) canvas."""
  h, w = content_size(size, shape)
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
  h, w = content_size(size, image.shape)
  padded = _reflect_pad(image, k // 2, h, w)
  if method == "fft":
    return _correlate_fft(padded, kernel, image.shape[:2])
  if method == "direct":
    return _correlate_direct(padded, kernel, precision)
  raise ValueError(f"unknown filter2d method {method!r}: expected 'auto', 'fft' or 'direct'")


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
  h, w = content_size(size, image.shape)
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

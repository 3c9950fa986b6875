"""PSNR and SSIM as BasicSR computes them, batched and jittable.

The restoration papers TIP compares with report BasicSR's `calculate_psnr` /
`calculate_ssim`, so these follow that definition exactly: images on the [0, 255]
scale, `crop_border` pixels dropped from every edge, optionally only the MATLAB
BT.601 luma (Y = 16 + 65.481 R + 128.553 G + 24.966 B, unrounded), SSIM from an
11-tap Gaussian window (sigma 1.5) over the 'valid' region with c1 = (0.01 * 255)^2,
c2 = (0.03 * 255)^2, averaged over the map and then over channels. Inputs are float
[0, 1] NHWC RGB and are not quantised: round to uint8 levels first to score saved
images as BasicSR does.

The Gaussian filter is our own separable one (eleven shifted, weighted slices per
axis) rather than dm-pix's `ssim`: dm-pix is neither installed nor a dependency (a
package for some forty lines), has no border crop or Y channel, and filters through
1-D `jnp.convolve` calls, while shifted slices are elementwise arithmetic that every
backend fuses, never lowers to reduced-precision (TF32) convolutions on a GPU, and let
the five local moments share one pass.

In float32 the variances E[x^2] - E[x]^2 of [0, 255] values lose digits to
cancellation, so each image channel is centred on its mean first (the variances and
covariance do not change; the means are shifted back): on real photos that brings
float32 from 2e-6 to 1.2e-7 of BasicSR's float64 SSIM.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_WINDOW = 11
_SIGMA = 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2
# MATLAB rgb2ycbcr luma for R, G, B in [0, 1]; the result is on the [0, 255] scale.
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0


@functools.cache
def gaussian_taps(size: int = _WINDOW, sigma: float = _SIGMA) -> np.ndarray:
  """The normalised 1-D Gaussian of `cv2.getGaussianKernel(size, sigma)` (sigma > 0)."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  taps = np.exp(-x * x / (2 * sigma * sigma))
  return taps / taps.sum()


def _to_255(images: jax.Array, crop_border: int, y_channel: bool) -> jax.Array:
  """Crops `crop_border` from every edge, takes the Y channel if asked, scales to [0, 255].

  The luma is a weighted sum, not a matmul, so that no backend lowers it to reduced
  precision (TF32) arithmetic.
  """
  images = jnp.asarray(images)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f"images must be float in [0, 1], got {images.dtype}")
  images = images.astype(jnp.promote_types(images.dtype, jnp.float32))
  if crop_border:
    images = images[:, crop_border:-crop_border, crop_border:-crop_border, :]
  if y_channel:
    r, g, b = (images[..., i:i + 1] for i in range(3))
    return _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b + _Y_OFFSET
  return images * 255.0


def _check(pred: jax.Array, ref: jax.Array, crop_border: int, y_channel: bool) -> None:
  if pred.shape != ref.shape or pred.ndim != 4:
    raise ValueError(f"pred and ref must be NHWC of one shape, got {pred.shape} and {ref.shape}")
  if crop_border < 0 or 2 * crop_border >= min(pred.shape[1:3]):
    raise ValueError(f"crop_border {crop_border} leaves nothing of a {pred.shape[1:3]} image")
  if y_channel and pred.shape[-1] != 3:
    raise ValueError(f"y_channel needs RGB images, got {pred.shape[-1]} channels")


@functools.partial(jax.jit, static_argnames=("crop_border", "y_channel"))
def psnr(pred: jax.Array, ref: jax.Array, *, crop_border: int = 0,
         y_channel: bool = False) -> jax.Array:
  """PSNR in dB per image, (B,), of [0, 1] NHWC images scored on the [0, 255] scale.

  Identical images give `inf`, as BasicSR's `calculate_psnr` does: a finite stand-in
  would silently bias a mean, so callers that average decide what to do with it.
  """
  _check(pred, ref, crop_border, y_channel)
  diff = _to_255(pred, crop_border, y_channel) - _to_255(ref, crop_border, y_channel)
  mse = jnp.mean(diff * diff, axis=(1, 2, 3))
  return 10.0 * jnp.log10(255.0 * 255.0 / mse)


def _filter_valid(maps: jax.Array) -> jax.Array:
  """The 11x11 Gaussian window over axes 2 and 3 (H, W), 'valid' region only."""
  taps = gaussian_taps()
  for axis in (2, 3):
    n = maps.shape[axis] - _WINDOW + 1
    maps = sum(float(t) * jax.lax.slice_in_dim(maps, k, k + n, axis=axis)
               for k, t in enumerate(taps))
  return maps


@functools.partial(jax.jit, static_argnames=("crop_border", "y_channel"))
def ssim(pred: jax.Array, ref: jax.Array, *, crop_border: int = 0,
         y_channel: bool = False) -> jax.Array:
  """Mean SSIM per image, (B,), of [0, 1] NHWC images (BasicSR's `calculate_ssim`).

  Images must be at least 11 pixels high and wide after the crop.
  """
  _check(pred, ref, crop_border, y_channel)
  x = _to_255(pred, crop_border, y_channel)
  y = _to_255(ref, crop_border, y_channel)
  if min(x.shape[1:3]) < _WINDOW:
    raise ValueError(f"SSIM needs at least {_WINDOW}x{_WINDOW} pixels, got {x.shape[1:3]}")
  x_mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  y_mean = jnp.mean(y, axis=(1, 2), keepdims=True)
  x, y = x - x_mean, y - y_mean
  mu_x, mu_y, xx, yy, xy = _filter_valid(jnp.stack([x, y, x * x, y * y, x * y]))
  var_x = xx - mu_x * mu_x
  var_y = yy - mu_y * mu_y
  cov = xy - mu_x * mu_y
  mu_x, mu_y = mu_x + x_mean, mu_y + y_mean
  ssim_map = ((2 * mu_x * mu_y + _C1) * (2 * cov + _C2) /
              ((mu_x * mu_x + mu_y * mu_y + _C1) * (var_x + var_y + _C2)))
  return jnp.mean(ssim_map, axis=(1, 2, 3))

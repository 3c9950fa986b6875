"""Colour correction of a restored image towards its input's low frequencies.

Latent diffusion can drift in global colour (the VAE and the sampler both shift
low-frequency content). Two standard fixes, each a formula on the two images:
  "adain"    per-channel mean and standard deviation of the output set to the input's
             (Huang & Belongie 2017);
  "wavelet"  the output's high frequencies on the input's low frequencies, the split
             made by an à-trous (dilated 3x3 binomial) blur pyramid, as StableSR does.
Images are NHWC floats; the input is the (resized) degraded image at output size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
METHODS = ("adain", "wavelet")
# StableSR's à-trous levels: dilations 1..16, a low band of roughly 64 px, for its 512-px
# outputs. Fewer levels take more of the input (a finer low band): level L's band is
# about 2^(L+1) px.
LEVELS = 5


def _blur(x: Array, dilation: int) -> Array:
  """Separable [1, 2, 1]/4 blur with holes of `dilation`, edges replicated."""
  for axis in (1, 2):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (dilation, dilation)
    p = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    take = lambda s: jax.lax.slice_in_dim(p, s, s + n, axis=axis)  # noqa: E731
    x = 0.25 * take(0) + 0.5 * take(dilation) + 0.25 * take(2 * dilation)
  return x


def low_frequencies(x: Array, levels: int = LEVELS) -> Array:
  for i in range(levels):
    x = _blur(x, 2 ** i)
  return x


def color_fix(output: Array, reference: Array, method: str, levels: int = LEVELS) -> Array:
  """`output` with the colour of `reference` (same shape), by `method` in METHODS;
  `levels`: the wavelet split's (adain has none)."""
  if method == "adain":
    axes = (1, 2)
    mu_o, sd_o = output.mean(axes, keepdims=True), output.std(axes, keepdims=True)
    mu_r, sd_r = reference.mean(axes, keepdims=True), reference.std(axes, keepdims=True)
    return (output - mu_o) / (sd_o + 1e-5) * sd_r + mu_r
  if method == "wavelet":
    if levels < 1:
      raise ValueError(f"wavelet colour fix: levels must be at least 1, got {levels}")
    return output - low_frequencies(output, levels) + low_frequencies(reference, levels)
  raise ValueError(f"unknown colour fix {method!r}; expected one of {METHODS}")

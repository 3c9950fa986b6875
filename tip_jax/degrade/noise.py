"""Gaussian and Poisson noise of BasicSR's `*_noise_pt`, per example, content only."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tip_jax.degrade.ops import Array, SizeLike, content_mask, content_size




def _as_flag(gray: Array | bool | float) -> Array:
  """BasicSR's gray flag is a 0/1 float mixed as n*(1-g) + n_gray*g; only 0 and 1
  occur, so we treat it as a boolean (g > 0.5)."""
  return jnp.asarray(gray, jnp.float32) > 0.5


def _draw(sample, key: Array, shape: tuple[int, ...], field: tuple[int, int] | None) -> Array:
  """`sample(key, shape)`, drawn on a `field` (H, W) >= shape and cropped to it.

  Random bits are counter-based, so a pixel's value depends on the draw's shape.
  Drawing on one fixed field makes the noise at a content pixel independent of the
  canvas the content happens to sit on (`pipeline.degrade`'s bucketed canvases).
  """
  if field is None:
    return sample(key, shape)
  return sample(key, (*field, shape[-1]))[:shape[0], :shape[1]]


def gaussian_noise(image: Array, key: Array, sigma: Array | float,
                   gray: Array | bool | float, field: tuple[int, int] | None = None) -> Array:
  """image + N(0, 1) * sigma, colour (per channel) or gray (one field for all channels).

  sigma is in [0, 1] units (BasicSR's sigma / 255). The gray field is channel 0 of
  the same draw, so one normal draw serves both variants. No clamp: the caller clips.
  (BasicSR draws one gray field per *batch*, broadcast to every sample; here each
  example has its own, which is what the per-sample sigma suggests was intended.)
  """
  n = _draw(lambda k, shape: jax.random.normal(k, shape, jnp.float32), key, image.shape, field)
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
  mask = content_mask(image.shape, content_size(size, image.shape))
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


def _poisson_by_inversion(key: Array, levels: Array, vals: Array,
                          field: tuple[int, int] | None = None) -> Array:
  """Poisson(levels / 255 * vals) counts by inverting a per-level CDF table.

  `jax.random.poisson` runs a Knuth loop and a rejection loop over the whole array
  until the slowest pixel finishes (~14 s for 16 x 512^2 x 3 on a 2-core CPU). Here
  the rates take at most 256 distinct values, so one uniform per pixel and a 9-step
  binary search in that level's 512-entry CDF give an exact-in-distribution draw
  (up to the table's float32 error above) in ~40x less time.
  """
  table = poisson_cdf_table(vals).reshape(-1)
  u = _draw(lambda k, shape: jax.random.uniform(k, shape, jnp.float32), key, levels.shape, field)
  base = levels * _POISSON_TABLE_LEN
  count = jnp.zeros(levels.shape, jnp.int32)
  step = _POISSON_TABLE_LEN // 2
  while step >= 1:                       # count = #{k : cdf[k] < u}, a lower bound search
    below = jnp.take(table, base + count + (step - 1), mode="clip") < u
    count = count + jnp.where(below, step, 0)
    step //= 2
  return count


def _pad_to(x: Array, shape: tuple[int, ...]) -> Array:
  return jnp.pad(x, [(0, t - n) for n, t in zip(x.shape, shape)])


def poisson_noise(image: Array, key: Array, scale: Array | float, gray: Array | bool | float,
                  size: SizeLike | None = None, method: str = "table",
                  field: tuple[int, int] | None = None) -> Array:
  """image + scale * (Poisson(q * vals) / vals - q), BasicSR `generate_poisson_noise_pt`.

  q = clamp(round(x * 255), 0, 255) / 255 of the image (colour: per channel; gray: of
  the gray image, the noise then repeated on all channels); vals = 2^ceil(log2(#unique
  q over the content)). The noise is added to the unrounded image, no clamp.
  One Poisson draw of the image's shape serves both variants (gray uses channel 0).

  method: "table" (default; CDF inversion, see `_poisson_by_inversion`) or "jax"
  (`jax.random.poisson`, ~40x slower on CPU; non-content rates are zeroed so its
  loops stay short and finite). Both sample the same distribution.
  field: draw the random numbers on this static (H, W) and crop (see `_draw`).
  """
  h, w = content_size(size, image.shape)
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
    counts = _poisson_by_inversion(key, levels, vals, field)
  elif method == "jax":
    counts = _draw(lambda k, shape: jax.random.poisson(k, _pad_to(q * vals, shape), shape),
                   key, image.shape, field)
  else:
    raise ValueError(f"unknown poisson method {method!r}: expected 'table' or 'jax'")
  noise = counts.astype(jnp.float32) / vals - q
  noise = jnp.where(flag, jnp.broadcast_to(noise[..., :1], noise.shape), noise)
  return image + noise * jnp.asarray(scale, jnp.float32)


"""Tiles: coverage, exact round trip, continuous blending, tiles spread over devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tip_jax.diffusion import tiling
from tip_jax.diffusion.tiling import Tiles


def test_cover_spans_the_canvas_with_the_overlap():
  tiles = Tiles.cover((192, 128), 64, 16)
  ys = sorted({y for y, _ in tiles.starts})
  xs = sorted({x for _, x in tiles.starts})
  assert (ys[0], ys[-1] + 64, xs[0], xs[-1] + 64) == (0, 192, 0, 128)
  assert min(np.diff(ys)) <= 48 and min(np.diff(xs)) <= 48    # >= 16 shared
  assert len(tiles) == len(ys) * len(xs) == 4 * 3
  small = Tiles.cover((40, 100), 64, 16)
  assert small.size == (40, 64) and len(small) == 2
  with pytest.raises(ValueError, match="overlap"):
    Tiles.cover((100, 100), 32, 32)


def test_split_merge_is_the_identity(rng):
  x = rng.standard_normal((2, 50, 70, 3)).astype(np.float32)
  tiles = Tiles.cover((50, 70), 24, 6)
  parts = tiles.split(x)
  assert parts.shape == (len(tiles), 2, 24, 24, 3)
  np.testing.assert_allclose(tiles.merge(parts), x, atol=1e-6)
  pixel = tiles.scaled(8)
  assert pixel.canvas == (400, 560) and pixel.size == (192, 192) and pixel.overlap == 48


def test_blend_is_continuous_across_tile_boundaries():
  """Tiles that disagree by a constant offset each (the worst case of per-tile
  normalisation) blend into steps of at most offset / (overlap + 1) per pixel."""
  tiles = Tiles.cover((1, 200), 64, 16)
  offsets = jnp.arange(len(tiles), dtype=jnp.float32)[:, None, None, None, None]
  merged = np.asarray(tiles.merge(jnp.zeros((len(tiles), 1, 1, 64, 1)) + offsets))[0, 0, :, 0]
  assert np.abs(np.diff(merged)).max() <= 1.0 / 17 + 1e-6


def test_map_tiles_over_devices_matches_one_device(rng):
  x = rng.standard_normal((11, 1, 8, 8, 2)).astype(np.float32)
  fn = lambda scale, t: jnp.tanh(t * scale).sum(axis=-1, keepdims=True)  # noqa: E731
  one = tiling.map_tiles(fn, 2.0, x)
  mesh = tiling.tile_mesh(4)
  spread = jax.jit(lambda c, t: tiling.map_tiles(fn, c, t, mesh))(2.0, x)
  np.testing.assert_allclose(spread, one, atol=1e-6)
  with pytest.raises(ValueError, match="devices"):
    tiling.tile_mesh(len(jax.devices()) + 1)

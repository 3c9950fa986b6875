"""Overlapping tiles over a canvas: split, run a function per tile, blend back.

Used for tiled latent diffusion (the denoiser's output is blended at every step, so
neighbouring tiles agree on one latent before the next step) and for tiled VAE
encode/decode. Each tile's contribution is weighted by a ramp that falls linearly
over the overlap towards its edges, and the weights are normalised per position, so
the blend is continuous across every tile boundary and exact where one tile covers.
The per-tile function runs under `lax.map` (one tile's activations alive at a time:
memory is set by the tile, not the canvas) and, given a mesh, tiles are dealt out over
its devices with `shard_map` — tiles are independent work.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

Array = jax.Array
TILE_AXIS = "tiles"


def _axis_starts(n: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of tiles of length `tile` covering [0, n) with >= `overlap` shared."""
  if n <= tile:
    return [0]
  count = math.ceil((n - overlap) / (tile - overlap))
  return [int(round(s)) for s in np.linspace(0, n - tile, count)]


@dataclasses.dataclass(frozen=True)
class Tiles:
  """Tiles of `size` at `starts` over a canvas (H, W); all lengths in one unit."""

  canvas: tuple[int, int]
  size: tuple[int, int]
  starts: tuple[tuple[int, int], ...]
  overlap: int

  @classmethod
  def cover(cls, canvas: tuple[int, int], tile: int, overlap: int) -> Tiles:
    """The fewest evenly spaced tiles of side `tile` (clipped to the canvas) with at
    least `overlap` in common between neighbours."""
    if not 0 <= overlap < tile:
      raise ValueError(f"tile overlap must be in [0, {tile}), got {overlap}")
    size = (min(tile, canvas[0]), min(tile, canvas[1]))
    ys, xs = (_axis_starts(n, t, overlap) for n, t in zip(canvas, size))
    return cls(tuple(canvas), size, tuple((y, x) for y in ys for x in xs), overlap)

  def scaled(self, factor: int) -> Tiles:
    """The same tiles in units `factor` times finer (latent -> pixel: 8)."""
    return Tiles((self.canvas[0] * factor, self.canvas[1] * factor),
                 (self.size[0] * factor, self.size[1] * factor),
                 tuple((y * factor, x * factor) for y, x in self.starts), self.overlap * factor)

  def __len__(self) -> int:
    return len(self.starts)

  def weights(self) -> np.ndarray:
    """(h, w) blend weight of one tile: 1 inside, falling linearly to 1/(overlap+1) at
    its edges. Never 0, so a canvas border that only one tile covers keeps weight 1
    after normalisation."""
    ramps = []
    for n in self.size:
      i = np.arange(n)
      ramps.append(np.minimum(1.0, np.minimum(i + 1, n - i) / (self.overlap + 1)))
    return np.outer(*ramps).astype(np.float32)

  def _index(self) -> tuple[np.ndarray, np.ndarray]:
    starts = np.asarray(self.starts)
    rows = starts[:, 0, None] + np.arange(self.size[0])
    cols = starts[:, 1, None] + np.arange(self.size[1])
    return rows[:, :, None], cols[:, None, :]

  def split(self, x: Array) -> Array:
    """(B, H, W, C) canvas -> (n, B, h, w, C) tiles."""
    rows, cols = self._index()
    return jnp.moveaxis(x[:, rows, cols], 1, 0)

  def merge(self, tiles: Array) -> Array:
    """(n, B, h, w, C) tiles -> (B, H, W, C): the weighted average where they overlap."""
    rows, cols = self._index()
    w = self.weights()
    total = np.zeros(self.canvas, np.float32)
    np.add.at(total, (rows, cols), np.broadcast_to(w, (len(self),) + w.shape))
    n, b, h, wd, c = tiles.shape
    out = jnp.zeros((b,) + self.canvas + (c,), tiles.dtype)
    out = out.at[:, rows, cols].add(jnp.moveaxis(tiles * w[:, :, None], 0, 1))
    return out / jnp.asarray(total)[:, :, None]


def map_tiles(fn: Callable[[Any, Any], Array], consts: Any, tiles: Any,
              mesh: Mesh | None = None, batch_size: int | None = None) -> Array:
  """fn(consts, one_tile) over the leading axis of `tiles` (a pytree), one at a time
  (or `batch_size` at a time, vmapped). With a mesh whose only axis is `TILE_AXIS`,
  each device runs its own share of the tiles; `consts` is replicated."""
  def run(c, t):
    return lax.map(lambda one: fn(c, one), t, batch_size=batch_size)

  if mesh is None or mesh.size == 1:
    return run(consts, tiles)
  n = jax.tree.leaves(tiles)[0].shape[0]
  padded = -(-n // mesh.size) * mesh.size
  # Pad with copies of the last tile so every device gets the same count; dropped below.
  tiles = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], padded - n, 0)]), tiles)
  out = jax.shard_map(run, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(TILE_AXIS)),
                      out_specs=PartitionSpec(TILE_AXIS))(consts, tiles)
  return out[:n]


def tile_mesh(devices: int | None) -> Mesh | None:
  """A one-axis mesh over the first `devices` devices (None or 1: no mesh)."""
  if devices is None or devices == 1:
    return None
  available = jax.devices()
  if not 1 <= devices <= len(available):
    raise ValueError(f"devices must be in [1, {len(available)}], got {devices}")
  return jax.make_mesh((devices,), (TILE_AXIS,), devices=available[:devices],
                       axis_types=(jax.sharding.AxisType.Auto,))

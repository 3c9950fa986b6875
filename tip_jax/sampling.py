"""The restorer's programs: one batch's sampling loop, VAE decode and encode, text encoding.

Module-level pure functions of params and arrays, jitted with the models and the
`Layout` (sizes, tiles, guidance rows) as static arguments: every restorer with the same
models (the trainer's sample grids at each checkpoint, an evaluator walking a run's
checkpoints) shares one compile cache. One restore = text encoding, one sampling
program (every step inside a `lax.scan`, guidance inside the step) and one VAE decode,
for a whole batch of same-size images at once. Above the model's resolution the latent
is tiled: at every step each overlapping tile is denoised on its own and the outputs are
blended into one latent (`tip_jax.diffusion.tiling`), and the VAE decodes (and encodes)
tile by tile, so activation memory is set by the tile, not the image. Tiles can be
spread over devices. `tip_jax.restore.TIPRestorer` builds the inputs around them.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tip_jax.diffusion import samplers, tiling
from tip_jax.models import tip
from tip_jax.models.controlnet import ControlNetModel

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Layout:
  """The static shape of one restore call: what a compiled program depends on."""

  latent: tuple[int, int]
  tiles: tiling.Tiles | None      # latent tiles; None = the whole latent at once
  cfg: bool                       # an unconditional-semantic row for guidance
  restoration_cfg: bool           # a null-restoration row for restoration guidance
  devices: int | None = None      # spread tiles over this many devices
  tile_batch: int | None = None   # tiles denoised together (vmapped) per device
  factor: int = 8                 # pixels per latent along a side (the VAE's downsampling)

  @property
  def rows(self) -> int:
    """Model rows per image: (c_s, c_r), then (∅, c_r) with cfg, (c_s, "") with
    restoration cfg."""
    return 1 + self.cfg + self.restoration_cfg

  @property
  def control_rows(self) -> tuple[int, ...]:
    """Each model row's ControlNet row. The ControlNet sees (z_t, t, c_r, y) only, so the
    unconditional-semantic row (∅, c_r) has row 0's inputs and takes row 0's output;
    (c_s, "") has its own."""
    return (0,) * (1 + self.cfg) + (1,) * self.restoration_cfg


def _guided(unet: nn.Module, controlnet: ControlNetModel, layout: Layout):
  """guided(consts, x, y): the guided model output for latents (or latent tiles) x of a
  batch and their images y; consts = (params, t, semantic, restoration, scales) with
  (B, rows, L, D) prompt states. The ControlNet runs on the distinct `control_rows` only."""
  take = np.asarray(layout.control_rows)
  first = np.unique(take, return_index=True)[1]  # the model row each ControlNet row has
  n = len(first)

  def guided(consts, x, y):
    params, t, semantic, restoration, scales = consts
    batch, rows = semantic.shape[:2]
    flat = lambda e: e.reshape((-1,) + e.shape[2:])  # noqa: E731
    control = controlnet.apply({"params": params["controlnet"]}, jnp.repeat(x, n, 0),
                               jnp.full((batch * n,), t), flat(restoration[:, first]),
                               jnp.repeat(y, n, 0))
    control = jax.tree.map(lambda c: flat(c.reshape((batch, n) + c.shape[1:])[:, take]),
                           control)
    out = tip.denoise(unet, params["unet"], jnp.repeat(x, rows, 0),
                      jnp.full((batch * rows,), t), flat(semantic), control,
                      controlnet.config.fusion, scales[2])
    out = out.reshape((batch, rows) + out.shape[1:])
    m = out[:, 0]
    if layout.cfg:
      m = out[:, 1] + scales[0] * (out[:, 0] - out[:, 1])
    if layout.restoration_cfg:
      m = m + (scales[1] - 1) * (out[:, 0] - out[:, -1])
    return m

  return guided


@functools.partial(jax.jit, static_argnames=("unet", "controlnet", "layout"))
def sample_latents(params: dict, start: Array, degraded: Array, semantic: Array,
                   restoration: Array, plan: samplers.Plan, scales: Array, *,
                   unet: nn.Module, controlnet: ControlNetModel, layout: Layout) -> Array:
  """The whole sampling loop for a batch: start (B, h, w, C) latents, degraded (B, fh, fw, 3)
  in [-1, 1], prompt states (B, rows, L, D), scales = (guidance, restoration guidance,
  control scale); params = {"unet", "controlnet"} → (B, h, w, C) final latents."""
  guided = _guided(unet, controlnet, layout)
  mesh = tiling.tile_mesh(layout.devices)
  y_tiles = layout.tiles.scaled(layout.factor).split(degraded) if layout.tiles else None

  def denoise(x, t):
    consts = (params, t, semantic, restoration, scales)
    if layout.tiles is None:
      return guided(consts, x, degraded)
    outs = tiling.map_tiles(lambda c, xy: guided(c, *xy), consts,
                            (layout.tiles.split(x), y_tiles), mesh, layout.tile_batch)
    return layout.tiles.merge(outs)

  return samplers.sample(denoise, start, plan)


@functools.partial(jax.jit, static_argnames=("vae", "layout"))
def decode(vae_params: dict, latent: Array, *, vae: nn.Module, layout: Layout) -> Array:
  """Scaled latents → images in [-1, 1] (tile by tile above the model's resolution)."""
  z = vae.config.unscale(latent)
  run = lambda p, x: vae.apply({"params": p}, x, method="decode")  # noqa: E731
  if layout.tiles is None:
    return run(vae_params, z)
  outs = tiling.map_tiles(run, vae_params, layout.tiles.split(z))
  return layout.tiles.scaled(layout.factor).merge(outs)


@functools.partial(jax.jit, static_argnames=("vae", "layout"))
def encode(vae_params: dict, images: Array, *, vae: nn.Module, layout: Layout) -> Array:
  """Images in [-1, 1] → scaled latents (the posterior mean)."""
  run = lambda p, x: vae.apply({"params": p}, x, method="encode")[0]  # noqa: E731
  if layout.tiles is None:
    mean = run(vae_params, images)
  else:
    outs = tiling.map_tiles(run, vae_params, layout.tiles.scaled(layout.factor).split(images))
    mean = layout.tiles.merge(outs)
  return vae.config.scale(mean)


@functools.partial(jax.jit, static_argnames=("text_encoder",))
def encode_text(params: dict, ids: Array, *, text_encoder: nn.Module) -> Array:
  return text_encoder.apply({"params": params}, ids)

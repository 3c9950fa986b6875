"""The Stable Diffusion VAE (diffusers' `AutoencoderKL`) in Flax linen, NHWC.

Module and param names mirror diffusers exactly (`encoder/down_blocks_0/resnets_1/conv1`,
`encoder/mid_block/attentions_0/to_q`, `quant_conv`, ...), so a diffusers VAE folder
loads through `tip_jax.convert.diffusers.load_component(path, "vae")` by renaming
alone. Every GroupNorm in the VAE (resnets, mid-block attention, conv_norm_out) uses
eps 1e-6, unlike the UNet's 1e-5.

Latent scaling is *not* done here: `encode` returns the raw Gaussian posterior and
`decode` takes raw latents, exactly as diffusers' `vae.encode` / `vae.decode` do.
Callers turn them into the UNet's latents with `config.scale` (subtract `shift_factor`,
when set, multiply by `scaling_factor`) and back with `config.unscale` before decoding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from tip_jax.models.layers import (Array, Downsample2D, ModelOptions, ResnetBlock2D,
                                   Upsample2D, conv, dense, group_norm, maybe_remat,
                                   multi_head_attention)

_EPS = 1e-6  # diffusers hard-codes 1e-6 for every norm of Encoder / Decoder


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Geometry of an `AutoencoderKL`; defaults are the SD1.x / SD2.x VAE."""

  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 4
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  norm_num_groups: int = 32
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  sample_size: int | tuple[int, ...] = 512

  def scale(self, latents: Array) -> Array:
    """The VAE's latents → the diffusion model's (shifted, then scaled)."""
    return (latents - (self.shift_factor or 0.0)) * self.scaling_factor

  def unscale(self, latents: Array) -> Array:
    """The diffusion model's latents → the VAE's, as `decode` takes them."""
    return latents / self.scaling_factor + (self.shift_factor or 0.0)

  @property
  def downsample_factor(self) -> int:
    """Pixels per latent along each side: one 2x downsampling between encoder blocks."""
    return 2 ** (len(self.block_out_channels) - 1)

  @classmethod
  def sd(cls) -> VAEConfig:
    """SD1.x and SD2.x share this VAE (ch 128, mult 1,2,4,4, z 4, factor 0.18215)."""
    return cls()

  @classmethod
  def tiny(cls) -> VAEConfig:
    """A 0.3M-parameter VAE with SD's 8x downsampling, for CPU tests and demos."""
    return cls(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
               sample_size=64)

  @classmethod
  def mini(cls) -> VAEConfig:
    """The shipped prior's VAE: 4x downsampling (64² photos → 16²x4 latents), because at
    SD's 8x a 64² image keeps only 256 numbers and no small VAE reconstructs it well
    enough for restoration to beat its input."""
    return cls(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
               sample_size=64)

  @classmethod
  def from_diffusers(cls, cfg: dict[str, Any]) -> VAEConfig:
    """Reads an AutoencoderKL config.json; missing keys take diffusers' own defaults."""
    channels = tuple(cfg.get("block_out_channels", (64,)))
    for key, allowed in (("down_block_types", "DownEncoderBlock2D"),
                         ("up_block_types", "UpDecoderBlock2D")):
      types = tuple(cfg.get(key, (allowed,)))
      if any(t != allowed for t in types):
        raise ValueError(f"{key}={list(types)}: only {allowed} blocks are supported")
      if len(types) != len(channels):
        raise ValueError(f"{key} has {len(types)} entries but block_out_channels has "
                         f"{len(channels)}")
    act = cfg.get("act_fn", "silu")
    if act not in ("silu", "swish"):  # diffusers maps both names to SiLU
      raise ValueError(f"act_fn={act!r}: only 'silu' is supported")
    sample_size = cfg.get("sample_size", 32)
    shift = cfg.get("shift_factor")
    return cls(
        in_channels=cfg.get("in_channels", 3),
        out_channels=cfg.get("out_channels", 3),
        latent_channels=cfg.get("latent_channels", 4),
        block_out_channels=channels,
        layers_per_block=cfg.get("layers_per_block", 1),
        norm_num_groups=cfg.get("norm_num_groups", 32),
        scaling_factor=float(cfg.get("scaling_factor", 0.18215)),
        shift_factor=None if shift is None else float(shift),
        use_quant_conv=cfg.get("use_quant_conv", True),
        use_post_quant_conv=cfg.get("use_post_quant_conv", True),
        mid_block_add_attention=cfg.get("mid_block_add_attention", True),
        sample_size=tuple(sample_size) if isinstance(sample_size, list) else sample_size)

  def to_diffusers(self) -> dict:
    """The config.json of diffusers' `AutoencoderKL` (what `from_diffusers` reads back)."""
    cfg = {"_class_name": "AutoencoderKL", "act_fn": "silu",
           "down_block_types": ["DownEncoderBlock2D"] * len(self.block_out_channels),
           "up_block_types": ["UpDecoderBlock2D"] * len(self.block_out_channels)}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      cfg[field.name] = list(value) if isinstance(value, tuple) else value
    return cfg


class SpatialSelfAttention(nn.Module):
  """The VAE mid-block attention: GroupNorm, one head over H*W positions, residual.

  diffusers builds it as `Attention(heads=1, bias=True, upcast_softmax=True,
  residual_connection=True)` with a built-in group_norm, so the params sit directly
  under `attentions_0` (no nested `attn`) and q/k/v carry biases.
  """

  groups: int
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    y = group_norm(self.options, "group_norm", groups=self.groups, eps=_EPS)(x)
    y = y.reshape(b, h * w, c)
    q, k, v = (dense(c, self.options, name, axes=("embed", "heads"))(y)
               for name in ("to_q", "to_k", "to_v"))
    # upcast mirrors diffusers' upcast_softmax: 4096-long bf16 softmaxes lose precision.
    y = multi_head_attention(q, k, v, 1, self.options, upcast=True)
    y = dense(c, self.options, "to_out_0", axes=("heads", "embed"))(y)
    return x + y.reshape(b, h, w, c)


class MidBlock(nn.Module):
  """resnets_0 -> [attentions_0] -> resnets_1 at constant width."""

  groups: int
  add_attention: bool
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    resnet = maybe_remat(ResnetBlock2D, self.options)
    c = x.shape[-1]
    x = resnet(c, self.options, groups=self.groups, eps=_EPS, name="resnets_0")(x)
    if self.add_attention:
      x = SpatialSelfAttention(self.groups, self.options, name="attentions_0")(x)
    return resnet(c, self.options, groups=self.groups, eps=_EPS, name="resnets_1")(x)


class VAEBlock(nn.Module):
  """DownEncoderBlock2D / UpDecoderBlock2D: resnets, then an optional resampler.

  "down" is diffusers' `padding=0` downsampler, which pads (0, 1) right/bottom only;
  "up" is nearest x2 + conv; None (the last block) keeps the resolution.
  """

  out_channels: int
  num_layers: int
  groups: int
  resample: str | None
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    resnet = maybe_remat(ResnetBlock2D, self.options)
    for j in range(self.num_layers):
      x = resnet(self.out_channels, self.options, groups=self.groups, eps=_EPS,
                 name=f"resnets_{j}")(x)
    if self.resample == "down":
      x = Downsample2D(self.out_channels, self.options, asymmetric=True,
                       name="downsamplers_0")(x)
    elif self.resample == "up":
      x = Upsample2D(self.out_channels, self.options, name="upsamplers_0")(x)
    return x


class Encoder(nn.Module):
  """Images (B, H, W, in) -> posterior moments (B, H/f, W/f, 2 * latent)."""

  config: VAEConfig
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg, opt = self.config, self.options
    chans = cfg.block_out_channels
    x = conv(chans[0], opt, "conv_in")(x)
    for i, ch in enumerate(chans):
      x = VAEBlock(ch, cfg.layers_per_block, cfg.norm_num_groups,
                   "down" if i < len(chans) - 1 else None, opt, name=f"down_blocks_{i}")(x)
    x = MidBlock(cfg.norm_num_groups, cfg.mid_block_add_attention, opt, name="mid_block")(x)
    x = nn.silu(group_norm(opt, "conv_norm_out", groups=cfg.norm_num_groups, eps=_EPS)(x))
    return conv(2 * cfg.latent_channels, opt, "conv_out")(x)


class Decoder(nn.Module):
  """Latents (B, h, w, latent) -> images (B, h*f, w*f, out); one more resnet per block."""

  config: VAEConfig
  options: ModelOptions

  @nn.compact
  def __call__(self, z: Array) -> Array:
    cfg, opt = self.config, self.options
    chans = tuple(reversed(cfg.block_out_channels))
    x = conv(chans[0], opt, "conv_in")(z)
    x = MidBlock(cfg.norm_num_groups, cfg.mid_block_add_attention, opt, name="mid_block")(x)
    for i, ch in enumerate(chans):
      x = VAEBlock(ch, cfg.layers_per_block + 1, cfg.norm_num_groups,
                   "up" if i < len(chans) - 1 else None, opt, name=f"up_blocks_{i}")(x)
    x = nn.silu(group_norm(opt, "conv_norm_out", groups=cfg.norm_num_groups, eps=_EPS)(x))
    return conv(cfg.out_channels, opt, "conv_out")(x)


class AutoencoderKL(nn.Module):
  """KL autoencoder: `encode` -> (mean, logvar), `decode` -> images, both NHWC.

  Images are floats in [-1, 1]. Latents are the *unscaled* latents that diffusers'
  `vae.decode` takes; applying `config.scaling_factor` (and `shift_factor`) is the
  caller's job, so this module stays a faithful port of the checkpoint.
  """

  config: VAEConfig
  options: ModelOptions = ModelOptions()

  def setup(self):
    cfg, opt = self.config, self.options
    self.encoder = Encoder(cfg, opt)
    self.decoder = Decoder(cfg, opt)
    # name=None: in setup, Flax names a submodule after the attribute it is assigned to.
    if cfg.use_quant_conv:
      self.quant_conv = conv(2 * cfg.latent_channels, opt, None, kernel=1, padding=0)
    if cfg.use_post_quant_conv:
      self.post_quant_conv = conv(cfg.latent_channels, opt, None, kernel=1, padding=0)

  def encode(self, images: Array) -> tuple[Array, Array]:
    """Posterior mean and log-variance; logvar clamped to [-30, 20] like diffusers."""
    moments = self.encoder(images)
    if self.config.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, latents: Array) -> Array:
    """Unscaled latents (B, h, w, latent) -> images (B, 8h, 8w, out) in about [-1, 1]."""
    if self.config.use_post_quant_conv:
      latents = self.post_quant_conv(latents)
    return self.decoder(latents)

  def __call__(self, images: Array) -> Array:
    """Reconstruction through the posterior mean; used by `init` to create every param."""
    return self.decode(self.encode(images)[0])

  def example_inputs(self, batch: int = 1) -> tuple[Array, ...]:
    """Params do not depend on spatial size; 64 is divisible by any SD-like downscale."""
    return (jnp.zeros((batch, 64, 64, self.config.in_channels), jnp.float32),)

"""TIP's ControlNet: a trainable copy of the UNet encoder that sees the degraded image.

Three ways in for the degraded image y (`conditioning`):
  "add"     diffusers' ControlNet: E'(y) ends in a zero conv to C0 channels and is
            added to conv_in(z_t).
  "concat"  the paper (Sec. 3.4): E'(y) (3->16->32->96->256, three stride-2 steps)
            is concatenated with z_t; the extra conv_in input channels start at zero,
            so at initialisation the branch sees z_t exactly as the UNet does.
  "vae"     not the paper's: E' is a trainable copy of the frozen VAE's encoder, so
            E'(y) starts as y's scaled latent (posterior mean), concatenated with z_t
            as in "concat". A from-scratch E' must first learn what the VAE encoder
            already computes; a small ControlNet trained briefly never does.
Three ways out (`fusion`), each through zero-initialised 1x1 convs
`controlnet_down_blocks_i` (one per UNet skip) and `controlnet_mid_block`:
  "additive"              a residual per skip and for the mid block (ControlNet-SR).
  "modulate_skip"         gamma || beta per skip and for the mid block (Eq. 3).
  "modulate_skip_and_up"  also gamma || beta for the decoder feature that each skip
                          is concatenated with (Tab. 6, StableSR-style).
`tip_jax.models.tip.fusion_hook` turns these outputs into the UNet's fusion hook.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

from tip_jax.models import params as params_lib
from tip_jax.models.layers import ModelOptions, conv
from tip_jax.models.unet import (UNetConfig, encoder_path, skip_channels, time_embedding,
                                 up_path_channels)
from tip_jax.models.vae import Encoder, VAEConfig

Array = jax.Array
CONDITIONING = ("add", "concat", "vae")
FUSIONS = ("additive", "modulate_skip", "modulate_skip_and_up")
_SHARED_WITH_UNET = ("time_embedding", "conv_in", "down_blocks_", "mid_block")
# ControlNet's E' widths, from an 8x VAE's full resolution to its latents (the paper's).
E_PRIME_WIDTHS = (16, 32, 96, 256)


@dataclasses.dataclass(frozen=True)
class ControlNetConfig:
  unet: UNetConfig = UNetConfig()
  conditioning: str = "concat"
  fusion: str = "modulate_skip"
  conditioning_channels: int = 3
  conditioning_embedding_out_channels: tuple[int, ...] = E_PRIME_WIDTHS
  bgr: bool = False   # diffusers' controlnet_conditioning_channel_order == "bgr"
  vae: VAEConfig | None = None  # the encoder E' copies ("vae" conditioning only)

  def __post_init__(self):
    if self.conditioning not in CONDITIONING:
      raise ValueError(f"conditioning {self.conditioning!r} not in {CONDITIONING}")
    if (self.conditioning == "vae") != (self.vae is not None):
      raise ValueError("a VAEConfig is given with, and only with, conditioning='vae'")
    if self.fusion not in FUSIONS:
      raise ValueError(f"fusion {self.fusion!r} not in {FUSIONS}")

  @classmethod
  def from_diffusers(cls, cfg: dict) -> "ControlNetConfig":
    """A diffusers `ControlNetModel` config: additive residuals, added conditioning."""
    if cfg.get("global_pool_conditions"):
      raise ValueError("global_pool_conditions=True is not supported")
    return cls(unet=UNetConfig.from_diffusers(cfg), conditioning="add", fusion="additive",
               conditioning_channels=cfg.get("conditioning_channels", 3),
               conditioning_embedding_out_channels=tuple(
                   cfg.get("conditioning_embedding_out_channels", E_PRIME_WIDTHS)),
               bgr=cfg.get("controlnet_conditioning_channel_order", "rgb") == "bgr")

  @classmethod
  def tip(cls, unet: UNetConfig, fusion: str = "modulate_skip",
          downsample_factor: int = 8, vae: VAEConfig | None = None,
          widths: tuple[int, ...] | None = None) -> "ControlNetConfig":
    """The paper's ControlNet; E' takes the degraded image down to the latent grid of a
    VAE with `downsample_factor` (8 for SD: the paper's three stride-2 steps; a 4x VAE
    drops the first, keeping the widths that reach the latents). `widths` replaces
    ControlNet's four (`E_PRIME_WIDTHS`), truncated the same way: a narrower E' for a
    narrow UNet. Given `vae`, E' is that VAE's encoder instead ("vae" conditioning)."""
    if vae is not None:
      if widths:
        raise ValueError("E' widths are for 'concat' conditioning; 'vae' copies the encoder")
      return cls(unet=unet, conditioning="vae", fusion=fusion, vae=vae)
    steps = downsample_factor.bit_length() - 1
    if downsample_factor != 2 ** steps or not 1 <= steps <= 3:
      raise ValueError(f"downsample_factor {downsample_factor}: expected 2, 4 or 8")
    widths = tuple(widths) if widths else E_PRIME_WIDTHS
    if len(widths) != 4 or min(widths) < 1:
      raise ValueError(f"E' widths {widths}: expected 4 positive widths, ControlNet's "
                       "stages from an 8x VAE's full resolution to its latents")
    return cls(unet=unet, conditioning="concat", fusion=fusion,
               conditioning_embedding_out_channels=widths[3 - steps:])

  @property
  def downsample_factor(self) -> int:
    """Pixels of the conditioning image per latent: E' has one stride-2 step per stage."""
    if self.vae is not None:
      return self.vae.downsample_factor
    return 2 ** (len(self.conditioning_embedding_out_channels) - 1)

  def fusion_channels(self) -> tuple[list[int], int]:
    """Output channels of each skip's zero conv and of the mid block's."""
    per_site = 1 if self.fusion == "additive" else 2
    skips = [per_site * c for c in skip_channels(self.unet)]
    if self.fusion == "modulate_skip_and_up":
      ups = up_path_channels(self.unet)
      skips = [c + 2 * ups[i] for i, c in enumerate(skips)]
    return skips, per_site * self.unet.block_out_channels[-1]


class ConditioningEmbedding(nn.Module):
  """E': conv_in + SiLU, then [3x3 conv, stride-2 3x3 conv] per channel step, SiLU each."""

  channels: tuple[int, ...]
  options: ModelOptions
  out_channels: int | None   # zero conv to this width ("add"); None keeps channels[-1]

  @nn.compact
  def __call__(self, y: Array) -> Array:
    h = nn.silu(conv(self.channels[0], self.options, "conv_in")(y))
    for i, (c, c_next) in enumerate(zip(self.channels[:-1], self.channels[1:])):
      h = nn.silu(conv(c, self.options, f"blocks_{2 * i}")(h))
      h = nn.silu(conv(c_next, self.options, f"blocks_{2 * i + 1}", stride=2)(h))
    if self.out_channels is not None:
      h = conv(self.out_channels, self.options, "conv_out", zero_init=True)(h)
    return h


class VAEHintEncoder(nn.Module):
  """E' for "vae" conditioning: the VAE's encoder and quant conv, giving the posterior
  mean scaled (and shifted) as the UNet's latents are; params named as the VAE's."""

  config: VAEConfig
  options: ModelOptions

  @nn.compact
  def __call__(self, y: Array) -> Array:
    cfg = self.config
    moments = Encoder(cfg, self.options, name="encoder")(y)
    if cfg.use_quant_conv:
      moments = conv(2 * cfg.latent_channels, self.options, "quant_conv", kernel=1,
                     padding=0)(moments)
    return cfg.scale(moments[..., :cfg.latent_channels])


class ControlNetModel(nn.Module):
  """`apply(p, z_t, t, text, y)` -> (per-skip outputs, mid output), NHWC, y at 8x z_t."""

  config: ControlNetConfig
  options: ModelOptions = ModelOptions()

  @nn.compact
  def __call__(self, sample: Array, timesteps: Array, encoder_hidden_states: Array,
               cond_image: Array) -> tuple[tuple[Array, ...], Array]:
    cfg, opts = self.config, self.options
    ucfg = cfg.unet
    sample = sample.astype(opts.dtype)
    cond_image = cond_image.astype(opts.dtype)
    if cfg.bgr:
      cond_image = cond_image[..., ::-1]
    context = encoder_hidden_states.astype(opts.dtype)
    temb = time_embedding(ucfg, opts, timesteps, sample.shape[0])
    c0 = ucfg.block_out_channels[0]
    if cfg.conditioning == "vae":
      embedding = VAEHintEncoder(cfg.vae, opts, name="controlnet_cond_embedding")(cond_image)
    else:
      embedding = ConditioningEmbedding(
          cfg.conditioning_embedding_out_channels, opts,
          c0 if cfg.conditioning == "add" else None,
          name="controlnet_cond_embedding")(cond_image)
    if cfg.conditioning == "add":
      h = conv(c0, opts, "conv_in")(sample) + embedding
    else:
      h = conv(c0, opts, "conv_in")(jnp.concatenate([sample, embedding], axis=-1))
    h, skips = encoder_path(ucfg, opts, h, temb, context)
    skip_out, mid_out = cfg.fusion_channels()
    down = tuple(conv(c, opts, f"controlnet_down_blocks_{i}", kernel=1, padding=0,
                      zero_init=True)(s).astype(jnp.float32)
                 for i, (c, s) in enumerate(zip(skip_out, skips)))
    mid = conv(mid_out, opts, "controlnet_mid_block", kernel=1, padding=0, zero_init=True)(h)
    return down, mid.astype(jnp.float32)

  def example_inputs(self, batch: int = 1) -> tuple[Array, ...]:
    ucfg = self.config.unet
    size = 2 ** (len(ucfg.block_out_channels) - 1)
    return (jnp.zeros((batch, size, size, ucfg.in_channels)), jnp.zeros((batch,), jnp.int32),
            jnp.zeros((batch, 77, ucfg.cross_attention_dim)),
            jnp.zeros((batch, self.config.downsample_factor * size,
                       self.config.downsample_factor * size, self.config.conditioning_channels)))


def controlnet_params_from_unet(controlnet: ControlNetModel, unet_params: dict,
                                rng: jax.Array, vae_params: dict | None = None) -> dict:
  """Fresh ControlNet params whose encoder copies the UNet's (ControlNet's `from_unet`).

  E' and the zero convs keep their own initialisation; with "concat" or "vae"
  conditioning the UNet's conv_in kernel fills the z_t input channels and the E'
  channels stay zero. With "vae" conditioning E' copies `vae_params`' encoder and
  quant conv (required then).
  """
  fresh = flatten_dict(params_lib.init_params(controlnet, rng))
  source, copied_prefixes = flatten_dict(unet_params), _SHARED_WITH_UNET
  if controlnet.config.conditioning == "vae":
    if vae_params is None:
      raise ValueError("conditioning='vae' copies the VAE's encoder: give vae_params")
    source.update({("controlnet_cond_embedding",) + path: value
                   for path, value in flatten_dict(vae_params).items()
                   if path[0] in ("encoder", "quant_conv")})
    copied_prefixes += ("controlnet_cond_embedding",)
  for path, value in fresh.items():
    if not path[0].startswith(copied_prefixes):
      continue
    copied = source[path]
    if path == ("conv_in", "kernel") and copied.shape != value.shape:
      copied = jnp.zeros_like(value).at[:, :, :copied.shape[2], :].set(copied)
    fresh[path] = jnp.asarray(copied, value.dtype)
  return unflatten_dict(fresh)

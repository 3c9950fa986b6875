"""UNet2DCondition of Stable Diffusion 1.x / 2.x, with a fusion hook for TIP.

The encoder half (time embedding, conv_in, down blocks, mid block) is written as
functions that create submodules on the calling module, so the ControlNet builds
the same tree under the same names and "initialise from the UNet" is a subtree copy.

The fusion hook `fusion(site, index, feature) -> feature` is called on every skip
feature (`"skip"`, in the order the down path produces them), on the mid-block output
(`"mid"`, 0) and on the decoder feature before each skip is concatenated (`"up"`,
index of that skip). TIP's modulation and ControlNet's residuals are both hooks.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from tip_jax.models.layers import (Downsample2D, ModelOptions, ResnetBlock2D, TimestepEmbedding,
                                   Upsample2D, conv, group_norm, maybe_remat, timestep_embedding)
from tip_jax.models.transformer import Transformer2DModel

Array = jax.Array
FusionHook = Callable[[str, int, Array], Array]

_UNSUPPORTED = {  # diffusers options that SD1.x/2.x never set; refuse rather than ignore
    "addition_embed_type": None, "class_embed_type": None, "encoder_hid_dim": None,
    "time_cond_proj_dim": None, "only_cross_attention": False, "dual_cross_attention": False,
    "resnet_time_scale_shift": "default", "time_embedding_type": "positional",
    "conv_in_kernel": 3, "conv_out_kernel": 3, "act_fn": "silu", "center_input_sample": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn", "num_class_embeds": None,
}


def _per_block(value, n: int) -> tuple:
  return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Geometry of a diffusers `UNet2DConditionModel` (SD1.5 defaults)."""

  in_channels: int = 4
  out_channels: int = 4
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
  up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
  layers_per_block: int = 2
  attention_head_dim: int | tuple[int, ...] = 8   # diffusers' legacy name: heads per block
  num_attention_heads: int | tuple[int, ...] | None = None
  transformer_layers_per_block: int | tuple[int, ...] = 1
  cross_attention_dim: int = 768
  use_linear_projection: bool = False
  upcast_attention: bool = False
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  sample_size: int = 64
  prediction_type: str = "epsilon"   # from the scheduler config: "epsilon" | "v_prediction"

  @property
  def heads(self) -> tuple[int, ...]:
    n = len(self.block_out_channels)
    return _per_block(self.num_attention_heads or self.attention_head_dim, n)

  @property
  def depths(self) -> tuple[int, ...]:
    return _per_block(self.transformer_layers_per_block, len(self.block_out_channels))

  @property
  def time_embed_dim(self) -> int:
    return 4 * self.block_out_channels[0]

  @classmethod
  def from_diffusers(cls, cfg: dict, **overrides) -> "UNetConfig":
    for key, default in _UNSUPPORTED.items():
      if cfg.get(key, default) != default:
        raise ValueError(f"{key}={cfg[key]!r} is not supported (SD1.x/2.x use {default!r})")
    kwargs = {}
    for field in dataclasses.fields(cls):
      if cfg.get(field.name) is not None:
        value = cfg[field.name]
        kwargs[field.name] = tuple(value) if isinstance(value, list) else value
    bad = set(kwargs.get("down_block_types", ())) - {"CrossAttnDownBlock2D", "DownBlock2D"}
    bad |= set(kwargs.get("up_block_types", ())) - {"CrossAttnUpBlock2D", "UpBlock2D"}
    if bad:
      raise ValueError(f"unsupported block types {sorted(bad)}")
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_diffusers(self) -> dict:
    """The config.json of diffusers' `UNet2DConditionModel` for this geometry (what
    `from_diffusers` reads back); the prediction type lives in the scheduler config."""
    cfg = {"_class_name": "UNet2DConditionModel"}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.name != "prediction_type" and value is not None:
        cfg[field.name] = list(value) if isinstance(value, tuple) else value
    return cfg

  @classmethod
  def sd15(cls) -> "UNetConfig":
    return cls()

  @classmethod
  def sd21(cls) -> "UNetConfig":
    return cls(attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
               use_linear_projection=True, upcast_attention=True, sample_size=96,
               prediction_type="v_prediction")

  @classmethod
  def tiny(cls, cross_attention_dim: int = 32) -> "UNetConfig":
    """SD-shaped (cross-attention down/up blocks, mid attention) but narrow: CPU tests."""
    return cls(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
               down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
               attention_head_dim=4, cross_attention_dim=cross_attention_dim, sample_size=32)

  @classmethod
  def mini(cls, cross_attention_dim: int = 32) -> "UNetConfig":
    """The shipped prior's UNet: `tiny`'s blocks, wider, on the 16² latents of `VAEConfig.mini`."""
    return dataclasses.replace(cls.tiny(cross_attention_dim), block_out_channels=(32, 64, 128),
                               sample_size=16)


def _resnet(cfg: UNetConfig, options: ModelOptions, channels: int, name: str) -> nn.Module:
  return maybe_remat(ResnetBlock2D, options)(channels, options, groups=cfg.norm_num_groups,
                                             eps=cfg.norm_eps, name=name)


def _transformer(cfg: UNetConfig, options: ModelOptions, level: int, name: str) -> nn.Module:
  return maybe_remat(Transformer2DModel, options)(
      cfg.heads[level], options, depth=cfg.depths[level], groups=cfg.norm_num_groups,
      use_linear_projection=cfg.use_linear_projection, upcast=cfg.upcast_attention, name=name)


class DownBlock(nn.Module):
  """`CrossAttnDownBlock2D` / `DownBlock2D`: returns (h, the skip features it produced)."""

  config: UNetConfig
  options: ModelOptions
  level: int

  @nn.compact
  def __call__(self, h: Array, temb: Array, context: Array) -> tuple[Array, list[Array]]:
    cfg, opts = self.config, self.options
    channels = cfg.block_out_channels[self.level]
    cross = cfg.down_block_types[self.level] == "CrossAttnDownBlock2D"
    skips = []
    for j in range(cfg.layers_per_block):
      h = _resnet(cfg, opts, channels, f"resnets_{j}")(h, temb)
      if cross:
        h = _transformer(cfg, opts, self.level, f"attentions_{j}")(h, context)
      skips.append(h)
    if self.level < len(cfg.block_out_channels) - 1:
      h = Downsample2D(channels, opts, name="downsamplers_0")(h)
      skips.append(h)
    return h, skips


class MidBlock(nn.Module):
  """`UNetMidBlock2DCrossAttn`: resnet, transformer, resnet at the lowest resolution."""

  config: UNetConfig
  options: ModelOptions

  @nn.compact
  def __call__(self, h: Array, temb: Array, context: Array) -> Array:
    cfg, opts = self.config, self.options
    channels = cfg.block_out_channels[-1]
    h = _resnet(cfg, opts, channels, "resnets_0")(h, temb)
    h = _transformer(cfg, opts, len(cfg.block_out_channels) - 1, "attentions_0")(h, context)
    return _resnet(cfg, opts, channels, "resnets_1")(h, temb)


class UpBlock(nn.Module):
  """`CrossAttnUpBlock2D` / `UpBlock2D`: consumes layers_per_block + 1 skips."""

  config: UNetConfig
  options: ModelOptions
  index: int   # position in up_block_types (0 = lowest resolution)

  @nn.compact
  def __call__(self, h: Array, skips: list[Array], skip_ids: list[int], temb: Array,
               context: Array, fusion: FusionHook | None) -> Array:
    cfg, opts = self.config, self.options
    level = len(cfg.block_out_channels) - 1 - self.index
    channels = cfg.block_out_channels[level]
    cross = cfg.up_block_types[self.index] == "CrossAttnUpBlock2D"
    for j, (skip, skip_id) in enumerate(zip(skips, skip_ids)):
      if fusion is not None:
        h = fusion("up", skip_id, h)
      h = _resnet(cfg, opts, channels, f"resnets_{j}")(jnp.concatenate([h, skip], -1), temb)
      if cross:
        h = _transformer(cfg, opts, level, f"attentions_{j}")(h, context)
    if self.index < len(cfg.block_out_channels) - 1:
      h = Upsample2D(channels, opts, name="upsamplers_0")(h)
    return h


def up_path_channels(cfg: UNetConfig) -> dict[int, int]:
  """{skip index: channels of the decoder feature it is concatenated with}."""
  levels = len(cfg.block_out_channels)
  n_skips = 1 + levels * cfg.layers_per_block + levels - 1
  out, k, h = {}, 0, cfg.block_out_channels[-1]
  for i in range(levels):
    for _ in range(cfg.layers_per_block + 1):
      out[n_skips - 1 - k] = h
      h = cfg.block_out_channels[levels - 1 - i]
      k += 1
  return out


def skip_channels(cfg: UNetConfig) -> list[int]:
  """Channels of each skip feature, in the order the down path produces them."""
  out = [cfg.block_out_channels[0]]
  for level, c in enumerate(cfg.block_out_channels):
    out += [c] * cfg.layers_per_block + ([c] if level < len(cfg.block_out_channels) - 1 else [])
  return out


def time_embedding(cfg: UNetConfig, options: ModelOptions, timesteps: Array,
                   batch: int) -> Array:
  """Creates `time_embedding` on the calling module; (B,) or scalar t -> (B, 4·C0)."""
  t = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
  emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
  return TimestepEmbedding(cfg.time_embed_dim, options, name="time_embedding")(emb)


def encoder_path(cfg: UNetConfig, options: ModelOptions, h: Array, temb: Array,
                 context: Array) -> tuple[Array, list[Array]]:
  """Down blocks then mid block on the calling module; h is conv_in's output."""
  skips = [h]
  for level in range(len(cfg.block_out_channels)):
    h, new = DownBlock(cfg, options, level, name=f"down_blocks_{level}")(h, temb, context)
    skips += new
  return MidBlock(cfg, options, name="mid_block")(h, temb, context), skips


class UNet2DConditionModel(nn.Module):
  """ε- or v-prediction UNet; `apply(p, sample, timesteps, text, fusion=None)`, NHWC."""

  config: UNetConfig
  options: ModelOptions = ModelOptions()

  @nn.compact
  def __call__(self, sample: Array, timesteps: Array, encoder_hidden_states: Array,
               fusion: FusionHook | None = None) -> Array:
    cfg, opts = self.config, self.options
    sample = sample.astype(opts.dtype)
    context = encoder_hidden_states.astype(opts.dtype)
    temb = time_embedding(cfg, opts, timesteps, sample.shape[0])
    h = conv(cfg.block_out_channels[0], opts, "conv_in")(sample)
    h, skips = encoder_path(cfg, opts, h, temb, context)
    ids = list(range(len(skips)))
    if fusion is not None:
      skips = [fusion("skip", i, s) for i, s in enumerate(skips)]
      h = fusion("mid", 0, h)
    n = cfg.layers_per_block + 1
    for i in range(len(cfg.block_out_channels)):
      take, skips = skips[-n:][::-1], skips[:-n]
      take_ids, ids = ids[-n:][::-1], ids[:-n]
      h = UpBlock(cfg, opts, i, name=f"up_blocks_{i}")(h, take, take_ids, temb, context, fusion)
    h = nn.silu(group_norm(opts, "conv_norm_out", groups=cfg.norm_num_groups, eps=cfg.norm_eps)(h))
    return conv(cfg.out_channels, opts, "conv_out")(h).astype(jnp.float32)

  def example_inputs(self, batch: int = 1) -> tuple[Array, ...]:
    cfg = self.config
    size = 2 ** (len(cfg.block_out_channels) - 1)
    return (jnp.zeros((batch, size, size, cfg.in_channels)), jnp.zeros((batch,), jnp.int32),
            jnp.zeros((batch, 77, cfg.cross_attention_dim)))

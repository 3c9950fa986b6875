"""Building blocks shared by the CLIP text encoder, the VAE, the UNet and the ControlNet.

Every parameter is created through `nn.with_logical_partitioning`, so a config's
logical-to-mesh rules decide how it is sharded (see `tip_jax.train.sharding`).
Submodule names follow diffusers' module names with list indices joined by "_"
(`down_blocks.0.resnets.1` -> `down_blocks_0/resnets_1`), which keeps weight
conversion a rename plus a transpose.

Logical axis vocabulary: "embed" (a residual stream's width), "mlp" (a widened
hidden size), "heads" (attention projections), "conv_in"/"conv_out" (conv channels),
"norm" (norm scales and biases), "vocab" (token ids), "pos" (positions).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tip_jax.models import attention

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """How a model computes, independent of its geometry.

  dtype: compute dtype (bf16 on accelerators); params stay in `param_dtype`.
  attention_impl: passed to `jax.nn.dot_product_attention` (None lets JAX pick,
    "xla", or "cudnn" for the fused GPU kernel) where attention is not query-blocked.
  remat_policy: None (no rematerialisation) or the name of a
    `jax.checkpoint_policies` member applied to every resnet/transformer block.
  attention_query_chunk: run non-causal attentions longer than this many queries (and
    a multiple of it) with `attention.blocked_attention`: queries in blocks of this
    size, the softmax normalised on the output, the backward pass recomputing each
    block's probabilities. Memory per attention drops from T*S to chunk*S scores in
    both passes; on CPU it is 3-4x faster than XLA's unblocked attention at SD's
    1024- and 4096-token self-attentions (blocks of 128 and of 64 queries serve them
    best; see the README's benchmarks). Not combinable with attention_impl="cudnn",
    itself a fused kernel.
  """

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str | None = None
  remat_policy: str | None = None
  attention_query_chunk: int | None = None

  def __post_init__(self):
    if self.attention_query_chunk and self.attention_impl == "cudnn":
      raise ValueError("attention_query_chunk runs tip_jax's blocked attention and "
                       "attention_impl='cudnn' is JAX's fused kernel: set one of them")


def maybe_remat(module_cls: type[nn.Module], options: ModelOptions) -> type[nn.Module]:
  """Wraps a block class in `nn.remat` when the options ask for it."""
  if options.remat_policy is None:
    return module_cls
  policy = getattr(jax.checkpoint_policies, options.remat_policy, None)
  if policy is None:
    raise ValueError(f"unknown remat policy {options.remat_policy!r}: expected a name "
                     "in jax.checkpoint_policies, e.g. 'nothing_saveable'")
  return nn.remat(module_cls, policy=policy)


def _init(fn, axes: Sequence[str | None]):
  return nn.with_logical_partitioning(fn, tuple(axes))


def dense(features: int, options: ModelOptions, name: str, *, axes=("embed", "mlp"),
          use_bias: bool = True, zero_init: bool = False) -> nn.Dense:
  kernel_init = nn.initializers.zeros if zero_init else nn.linear.default_kernel_init
  return nn.Dense(features, use_bias=use_bias, dtype=options.dtype,
                  param_dtype=options.param_dtype, name=name,
                  kernel_init=_init(kernel_init, axes),
                  bias_init=_init(nn.initializers.zeros, axes[-1:]))


def conv(features: int, options: ModelOptions, name: str, *, kernel: int = 3,
         stride: int = 1, padding: Any = "SAME_1", zero_init: bool = False,
         use_bias: bool = True) -> nn.Conv:
  """A square conv; padding "SAME_1" means PyTorch's symmetric `padding=kernel // 2`."""
  if padding == "SAME_1":
    padding = ((kernel // 2, kernel // 2),) * 2
  kernel_init = nn.initializers.zeros if zero_init else nn.linear.default_kernel_init
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                 use_bias=use_bias, dtype=options.dtype, param_dtype=options.param_dtype,
                 name=name,
                 kernel_init=_init(kernel_init, (None, None, "conv_in", "conv_out")),
                 bias_init=_init(nn.initializers.zeros, ("conv_out",)))


def group_norm(options: ModelOptions, name: str, *, groups: int = 32,
               eps: float = 1e-5) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=options.dtype,
                      param_dtype=options.param_dtype, name=name,
                      scale_init=_init(nn.initializers.ones, ("norm",)),
                      bias_init=_init(nn.initializers.zeros, ("norm",)))


def layer_norm(options: ModelOptions, name: str, *, eps: float = 1e-5) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=eps, dtype=options.dtype, param_dtype=options.param_dtype,
                      name=name, scale_init=_init(nn.initializers.ones, ("norm",)),
                      bias_init=_init(nn.initializers.zeros, ("norm",)))


def embed(num: int, features: int, options: ModelOptions, name: str,
          axes=("vocab", "embed")) -> nn.Embed:
  return nn.Embed(num, features, dtype=options.dtype, param_dtype=options.param_dtype,
                  name=name, embedding_init=_init(nn.initializers.normal(0.02), axes))


def multi_head_attention(q: Array, k: Array, v: Array, heads: int, options: ModelOptions,
                         *, causal: bool = False, upcast: bool = False) -> Array:
  """(B, Tq, heads*D) x (B, Tk, heads*D) -> (B, Tq, heads*D), softmax(QK^T/sqrt(D))V."""
  b, tq, width = q.shape
  split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, x.shape[2] // heads)
  q, k, v = split(q), split(k), split(v)
  out_dtype = q.dtype
  if upcast:  # SD2.x's upcast_attention: softmax of QK^T in float32
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  chunk = options.attention_query_chunk
  if chunk and not causal and tq > chunk and tq % chunk == 0:
    out = attention.blocked_attention(q, k, v, chunk)
  else:
    out = jax.nn.dot_product_attention(q, k, v, is_causal=causal,
                                       implementation=options.attention_impl)
  return out.astype(out_dtype).reshape(b, tq, width)


class Attention(nn.Module):
  """diffusers' `Attention` without a norm: to_q/to_k/to_v and to_out.0."""

  heads: int
  dim_head: int
  options: ModelOptions
  qkv_bias: bool = False
  upcast: bool = False

  @nn.compact
  def __call__(self, x: Array, context: Array | None = None) -> Array:
    inner = self.heads * self.dim_head
    context = x if context is None else context
    q = dense(inner, self.options, "to_q", axes=("embed", "heads"), use_bias=self.qkv_bias)(x)
    k = dense(inner, self.options, "to_k", axes=("embed", "heads"), use_bias=self.qkv_bias)(context)
    v = dense(inner, self.options, "to_v", axes=("embed", "heads"), use_bias=self.qkv_bias)(context)
    out = multi_head_attention(q, k, v, self.heads, self.options, upcast=self.upcast)
    return dense(x.shape[-1], self.options, "to_out_0", axes=("heads", "embed"))(out)


class ResnetBlock2D(nn.Module):
  """GN-SiLU-conv twice, with an optional time-embedding shift and a 1x1 shortcut."""

  out_channels: int
  options: ModelOptions
  groups: int = 32
  eps: float = 1e-5
  output_scale_factor: float = 1.0

  @nn.compact
  def __call__(self, x: Array, temb: Array | None = None) -> Array:
    h = nn.silu(group_norm(self.options, "norm1", groups=self.groups, eps=self.eps)(x))
    h = conv(self.out_channels, self.options, "conv1")(h)
    if temb is not None:
      t = dense(self.out_channels, self.options, "time_emb_proj")(nn.silu(temb))
      h = h + t[:, None, None, :]
    h = nn.silu(group_norm(self.options, "norm2", groups=self.groups, eps=self.eps)(h))
    h = conv(self.out_channels, self.options, "conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, self.options, "conv_shortcut", kernel=1, padding=0)(x)
    return (x + h) / self.output_scale_factor


class Downsample2D(nn.Module):
  """Stride-2 3x3 conv; `asymmetric` pads (0, 1) on each axis as the VAE encoder does."""

  channels: int
  options: ModelOptions
  asymmetric: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    padding = ((0, 1), (0, 1)) if self.asymmetric else ((1, 1), (1, 1))
    return conv(self.channels, self.options, "conv", stride=2, padding=padding)(x)


class Upsample2D(nn.Module):
  """Nearest-neighbour x2 followed by a 3x3 conv."""

  channels: int
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
    return conv(self.channels, self.options, "conv")(x)


def timestep_embedding(timesteps: Array, dim: int, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0, max_period: float = 10000.0) -> Array:
  """Sinusoidal embedding of (B,) timesteps, in diffusers' `get_timestep_embedding` order."""
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  sin, cos = jnp.sin(args), jnp.cos(args)
  emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """linear_1 -> SiLU -> linear_2 on the sinusoidal embedding."""

  features: int
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = dense(self.features, self.options, "linear_1")(x.astype(self.options.dtype))
    return dense(self.features, self.options, "linear_2", axes=("mlp", "embed"))(nn.silu(x))

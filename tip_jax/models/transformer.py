"""The spatial transformer of SD's UNet (diffusers' `Transformer2DModel`).

GroupNorm -> proj_in (1x1 conv in SD1.x, Linear in SD2.x) -> N blocks of
[self-attention, cross-attention on the text, GEGLU feed-forward], each pre-LayerNorm
and residual -> proj_out, plus the outer residual.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tip_jax.models.layers import (Attention, ModelOptions, conv, dense, group_norm,
                                   layer_norm, maybe_remat)

Array = jax.Array


class GEGLU(nn.Module):
  """`proj` widens to 2·inner; one half gates the other through (exact) GELU."""

  inner: int
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    hidden, gate = jnp.split(dense(2 * self.inner, self.options, "proj")(x), 2, axis=-1)
    return hidden * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
  dim: int
  options: ModelOptions
  mult: int = 4

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = GEGLU(self.mult * self.dim, self.options, name="net_0")(x)
    return dense(self.dim, self.options, "net_2", axes=("mlp", "embed"))(h)


class BasicTransformerBlock(nn.Module):
  dim: int
  heads: int
  dim_head: int
  options: ModelOptions
  upcast: bool = False

  @nn.compact
  def __call__(self, x: Array, context: Array) -> Array:
    opts = self.options
    attn = lambda name: Attention(self.heads, self.dim_head, opts, upcast=self.upcast, name=name)
    x = x + attn("attn1")(layer_norm(opts, "norm1")(x))
    x = x + attn("attn2")(layer_norm(opts, "norm2")(x), context)
    return x + FeedForward(self.dim, opts, name="ff")(layer_norm(opts, "norm3")(x))


class Transformer2DModel(nn.Module):
  heads: int
  options: ModelOptions
  depth: int = 1
  groups: int = 32
  use_linear_projection: bool = False
  upcast: bool = False

  @nn.compact
  def __call__(self, x: Array, context: Array) -> Array:
    b, h, w, c = x.shape
    opts = self.options
    hidden = group_norm(opts, "norm", groups=self.groups, eps=1e-6)(x)
    if self.use_linear_projection:
      hidden = dense(c, opts, "proj_in")(hidden.reshape(b, h * w, c))
    else:
      hidden = conv(c, opts, "proj_in", kernel=1, padding=0)(hidden).reshape(b, h * w, c)
    block_cls = maybe_remat(BasicTransformerBlock, opts)
    for i in range(self.depth):
      hidden = block_cls(c, self.heads, c // self.heads, opts, upcast=self.upcast,
                         name=f"transformer_blocks_{i}")(hidden, context)
    if self.use_linear_projection:
      hidden = dense(c, opts, "proj_out", axes=("mlp", "embed"))(hidden).reshape(b, h, w, c)
    else:
      hidden = conv(c, opts, "proj_out", kernel=1, padding=0)(hidden.reshape(b, h, w, c))
    return hidden + x

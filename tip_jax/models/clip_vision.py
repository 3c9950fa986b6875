"""CLIP's vision tower (a ViT), as transformers' `CLIPVisionModel` builds it.

Non-overlapping patches are embedded by a bias-free strided conv, a learnt class token
is prepended, learnt position embeddings are added, and a LayerNorm runs *before* the
encoder (transformers calls it `pre_layrnorm`; the misspelling is kept so that weights
convert by name). The encoder blocks are the text tower's, run without the causal mask.
The pooled output is the class token after `post_layernorm`; CLIP-I compares images
by it (after `visual_projection`, which `tip_jax.models.clip` holds).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from tip_jax.models.clip_text import CLIPEncoder, CLIPTowerConfig
from tip_jax.models.layers import ModelOptions, conv, embed, layer_norm

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig(CLIPTowerConfig):
  """Geometry of a CLIP vision tower; defaults are transformers' (ViT-B/32 at 224)."""

  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32

  def __post_init__(self):
    super().__post_init__()
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size "
                       f"{self.patch_size}")

  @property
  def num_positions(self) -> int:
    """Patches plus the class token."""
    return (self.image_size // self.patch_size) ** 2 + 1

  @classmethod
  def vit_l14(cls) -> CLIPVisionConfig:
    """OpenAI CLIP ViT-L/14 at 224 (openai/clip-vit-large-patch14)."""
    return cls(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
               num_attention_heads=16, patch_size=14)


class CLIPVisionEmbeddings(nn.Module):
  config: CLIPVisionConfig
  options: ModelOptions

  @nn.compact
  def __call__(self, pixel_values: Array) -> Array:
    c, o = self.config, self.options
    patches = conv(c.hidden_size, o, "patch_embedding", kernel=c.patch_size,
                   stride=c.patch_size, padding="VALID", use_bias=False)(
                       pixel_values.astype(o.dtype))
    patches = patches.reshape(patches.shape[0], -1, c.hidden_size)
    cls_token = self.param(
        "class_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(c.hidden_size ** -0.5), ("embed",)),
        (c.hidden_size,), o.param_dtype).astype(o.dtype)
    cls_tokens = jnp.broadcast_to(cls_token, (patches.shape[0], 1, c.hidden_size))
    positions = embed(c.num_positions, c.hidden_size, o, "position_embedding",
                      axes=("pos", "embed"))(jnp.arange(c.num_positions)[None, :])
    return jnp.concatenate([cls_tokens, patches], axis=1) + positions


class CLIPVisionModel(nn.Module):
  """(B, H, W, C) normalised pixels, H = W = image_size -> (B, hidden) pooled output.

  The input is NHWC and already normalised with CLIP's mean and std (see
  `tip_jax.metrics.clip` for the preprocessing). Other sizes are refused, as
  transformers does without `interpolate_pos_encoding`: the position embeddings
  are learnt for one grid.
  """

  config: CLIPVisionConfig
  options: ModelOptions = ModelOptions()

  @nn.compact
  def __call__(self, pixel_values: Array) -> Array:
    c = self.config
    expected = (c.image_size, c.image_size, c.num_channels)
    if pixel_values.shape[1:] != expected:
      raise ValueError(f"CLIP vision input has shape {pixel_values.shape[1:]} per image; "
                       f"this model takes {expected} (NHWC)")
    x = CLIPVisionEmbeddings(c, self.options, name="embeddings")(pixel_values)
    x = layer_norm(self.options, "pre_layrnorm", eps=c.layer_norm_eps)(x)
    x = CLIPEncoder(c, self.options, causal=False, name="encoder")(x)
    return layer_norm(self.options, "post_layernorm", eps=c.layer_norm_eps)(x[:, 0])

  def example_inputs(self, batch: int = 1) -> tuple[Array]:
    c = self.config
    return (jnp.zeros((batch, c.image_size, c.image_size, c.num_channels), jnp.float32),)

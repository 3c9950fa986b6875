"""CLIP text encoder as Stable Diffusion uses it: the last hidden state after the final LN.

SD 1.x conditions on OpenAI CLIP ViT-L/14's text tower; SD 2.x on OpenCLIP ViT-H/14's,
cut to its first 23 blocks (the "penultimate" layer), which diffusers stores as a
transformers `CLIPTextModel` with `num_hidden_layers=23` and exact GELU. Both are the
same pre-LN causal transformer, so one module covers them. The text projection is not
built here: SD never reads it, and a text_encoder folder's weights then convert
one-to-one (module names mirror transformers'). CLIP-T needs the pooled output
(`eos_pool`) and the projection, which `tip_jax.models.clip` adds on top.

The encoder blocks are shared with the vision tower (`tip_jax.models.clip_vision`),
which runs them without the causal mask.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Self

import flax.linen as nn
import jax
import jax.numpy as jnp

from tip_jax.models.layers import (ModelOptions, dense, embed, layer_norm, maybe_remat,
                                   multi_head_attention)

Array = jax.Array

# transformers' ACT2FN names -> functions. "gelu" there is the exact (erf) GELU.
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


@dataclasses.dataclass(frozen=True)
class CLIPTowerConfig:
  """What the shared encoder blocks read; field names match transformers' config.json.

  The defaults are ViT-L/14's text tower, which are also transformers' vision defaults.
  """

  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5

  def __post_init__(self):
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"unsupported CLIP hidden_act {self.hidden_act!r}; expected one of "
                       f"{sorted(_ACTIVATIONS)}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                       f"num_attention_heads {self.num_attention_heads}")

  @classmethod
  def from_transformers(cls, cfg: dict[str, Any]) -> Self:
    """Reads a transformers tower config; missing keys take the dataclass defaults."""
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{k: cfg[k] for k in names if k in cfg})


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig(CLIPTowerConfig):
  """Geometry of a CLIP text tower (`from_transformers` reads a `CLIPTextConfig`)."""

  vocab_size: int = 49408
  max_position_embeddings: int = 77

  def to_transformers(self, **token_ids: int) -> dict:
    """The config.json of transformers' `CLIPTextModel`; `token_ids` are its
    bos/eos/pad_token_id, which the tokenizer knows and the tower does not."""
    return {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
            **dataclasses.asdict(self), **token_ids}

  @classmethod
  def sd15(cls) -> CLIPTextConfig:
    """OpenAI CLIP ViT-L/14 text tower (SD 1.x)."""
    return cls()

  @classmethod
  def sd21(cls) -> CLIPTextConfig:
    """OpenCLIP ViT-H/14 text tower, first 23 of 24 blocks (SD 2.x, as diffusers stores it)."""
    return cls(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
               num_attention_heads=16, hidden_act="gelu")

  @classmethod
  def tiny(cls) -> CLIPTextConfig:
    """CLIP's real vocabulary with a 2-layer, 32-wide tower: CPU tests and demos."""
    return cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4)


class CLIPAttention(nn.Module):
  """Multi-head self-attention with biased q/k/v/out projections, causal for text."""

  config: CLIPTowerConfig
  options: ModelOptions
  causal: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width, o = self.config.hidden_size, self.options
    q = dense(width, o, "q_proj", axes=("embed", "heads"))(x)
    k = dense(width, o, "k_proj", axes=("embed", "heads"))(x)
    v = dense(width, o, "v_proj", axes=("embed", "heads"))(x)
    out = multi_head_attention(q, k, v, self.config.num_attention_heads, o,
                               causal=self.causal)
    return dense(width, o, "out_proj", axes=("heads", "embed"))(out)


class CLIPMLP(nn.Module):
  config: CLIPTowerConfig
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    h = dense(c.intermediate_size, self.options, "fc1", axes=("embed", "mlp"))(x)
    h = _ACTIVATIONS[c.hidden_act](h)
    return dense(c.hidden_size, self.options, "fc2", axes=("mlp", "embed"))(h)


class CLIPEncoderLayer(nn.Module):
  """Pre-LN block: x + attn(LN1(x)), then x + mlp(LN2(x))."""

  config: CLIPTowerConfig
  options: ModelOptions
  causal: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    eps = self.config.layer_norm_eps
    x = x + CLIPAttention(self.config, self.options, self.causal, name="self_attn")(
        layer_norm(self.options, "layer_norm1", eps=eps)(x))
    return x + CLIPMLP(self.config, self.options, name="mlp")(
        layer_norm(self.options, "layer_norm2", eps=eps)(x))


class CLIPEmbeddings(nn.Module):
  config: CLIPTextConfig
  options: ModelOptions

  @nn.compact
  def __call__(self, input_ids: Array) -> Array:
    c = self.config
    tokens = embed(c.vocab_size, c.hidden_size, self.options, "token_embedding")(input_ids)
    positions = embed(c.max_position_embeddings, c.hidden_size, self.options,
                      "position_embedding", axes=("pos", "embed"))(
                          jnp.arange(input_ids.shape[1])[None, :])
    return tokens + positions


class CLIPEncoder(nn.Module):
  config: CLIPTowerConfig
  options: ModelOptions
  causal: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    layer_cls = maybe_remat(CLIPEncoderLayer, self.options)
    for i in range(self.config.num_hidden_layers):
      x = layer_cls(self.config, self.options, self.causal, name=f"layers_{i}")(x)
    return x


class CLIPTextModel(nn.Module):
  """(B, T) int token ids -> (B, T, hidden) last hidden state after `final_layer_norm`.

  No padding mask: SD conditions on all 77 positions, padding included, and the
  causal mask already keeps every real token blind to the padding after it.
  """

  config: CLIPTextConfig
  options: ModelOptions = ModelOptions()

  @nn.compact
  def __call__(self, input_ids: Array) -> Array:
    if input_ids.shape[1] > self.config.max_position_embeddings:
      raise ValueError(f"sequence length {input_ids.shape[1]} exceeds "
                       f"max_position_embeddings {self.config.max_position_embeddings}")
    x = CLIPEmbeddings(self.config, self.options, name="embeddings")(input_ids)
    x = CLIPEncoder(self.config, self.options, name="encoder")(x)
    return layer_norm(self.options, "final_layer_norm", eps=self.config.layer_norm_eps)(x)

  def example_inputs(self, batch: int = 1) -> tuple[Array]:
    return (jnp.zeros((batch, self.config.max_position_embeddings), jnp.int32),)


def eos_pool(hidden: Array, input_ids: Array, eos_token_id: int) -> Array:
  """(B, T, D) hidden states -> (B, D) at each sequence's first end-of-text token.

  transformers' `CLIPTextTransformer` pooler. Configs written before its eos fix carry
  `eos_token_id = 2` and take the position of the largest id instead, which is EOT
  (49407, the last id of CLIP's vocabulary); with EOT padding both rules pick the
  first EOT, because argmax returns the first maximum.
  """
  if eos_token_id == 2:
    position = jnp.argmax(input_ids, axis=-1)
  else:
    position = jnp.argmax(input_ids == eos_token_id, axis=-1)
  return jnp.take_along_axis(hidden, position[:, None, None], axis=1)[:, 0]

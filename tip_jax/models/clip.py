"""The two CLIP towers with their projections into the shared embedding space.

Mirrors transformers' `CLIPModel` (`text_model`, `vision_model`, `text_projection`,
`visual_projection`, both projections bias-free), so a CLIP folder's weights convert by
name. `logit_scale` is not built: CLIP-I and CLIP-T are raw cosines and never read it.
The features are unnormalised, as transformers' `get_*_features` return them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tip_jax.models.clip_text import CLIPTextConfig, CLIPTextModel, eos_pool
from tip_jax.models.clip_vision import CLIPVisionConfig, CLIPVisionModel
from tip_jax.models.layers import ModelOptions, dense

Array = jax.Array

# transformers' CLIPTextConfig defaults where ours (SD's ViT-L/14 text tower) differ;
# an older CLIP config.json may leave them out.
_TEXT_DEFAULTS = {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8}


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """Both towers, the shared embedding width and the text pooler's end-of-text id."""

  text: CLIPTextConfig = CLIPTextConfig()
  vision: CLIPVisionConfig = CLIPVisionConfig.vit_l14()
  projection_dim: int = 768
  eos_token_id: int = 49407

  @classmethod
  def from_transformers(cls, cfg: dict[str, Any]) -> CLIPConfig:
    """Reads a transformers `CLIPConfig` config.json; missing keys take its defaults."""
    text = {**_TEXT_DEFAULTS, **_tower(cfg, "text_config")}
    return cls(text=CLIPTextConfig.from_transformers(text),
               vision=CLIPVisionConfig.from_transformers(_tower(cfg, "vision_config")),
               projection_dim=cfg.get("projection_dim", 512),
               eos_token_id=text.get("eos_token_id", 49407))


def _tower(cfg: dict[str, Any], key: str) -> dict[str, Any]:
  """One tower's config. Files written by older transformers (the OpenAI Hub folders among
  them) also carry `<key>_dict`, which transformers reads instead when it is present."""
  return cfg.get(f"{key}_dict") or cfg.get(key) or {}


class CLIPModel(nn.Module):
  """`get_image_features` (normalised NHWC pixels) and `get_text_features` (token ids)."""

  config: CLIPConfig = CLIPConfig()
  options: ModelOptions = ModelOptions()

  def setup(self):
    c, o = self.config, self.options
    self.text_model = CLIPTextModel(c.text, o)
    self.vision_model = CLIPVisionModel(c.vision, o)
    self.text_projection = dense(c.projection_dim, o, "text_projection", use_bias=False)
    self.visual_projection = dense(c.projection_dim, o, "visual_projection", use_bias=False)

  def get_image_features(self, pixel_values: Array) -> Array:
    """(B, S, S, C) pixels normalised with CLIP's mean and std -> (B, projection_dim)."""
    return self.visual_projection(self.vision_model(pixel_values))

  def get_text_features(self, input_ids: Array) -> Array:
    """(B, T) token ids holding an end-of-text token each -> (B, projection_dim)."""
    hidden = self.text_model(input_ids)
    return self.text_projection(eos_pool(hidden, input_ids, self.config.eos_token_id))

  def __call__(self, pixel_values: Array, input_ids: Array) -> tuple[Array, Array]:
    return self.get_image_features(pixel_values), self.get_text_features(input_ids)

  def example_inputs(self, batch: int = 1) -> tuple[Array, Array]:
    v, t = self.config.vision, self.config.text
    return (jnp.zeros((batch, v.image_size, v.image_size, v.num_channels), jnp.float32),
            jnp.zeros((batch, t.max_position_embeddings), jnp.int32))

"""CLIP-I and CLIP-T: cosine similarities in CLIP's joint embedding space.

CLIP-I compares a restored image with its reference, CLIP-T a restored image with its
caption, each as the cosine of the two L2-normalised embeddings. Both are the *raw*
cosine: no x100 (torchmetrics' CLIPScore), no x2.5 (Hessel et al.'s CLIPScore) and no
clamp at 0, because the paper's CLIP-T values near 0.30 are only reachable as raw
cosines. The paper's embedding width d = 768 implies OpenAI CLIP ViT-L/14.

Preprocessing is transformers' CLIPImageProcessor with its default settings in the PIL
backend (the default class of transformers 4, `CLIPImageProcessorPil` in 5, and what
OpenAI's `clip.load` does): shortest side resized to the model's image size (224) with
PIL bicubic on uint8 pixels, centre crop, rescale by 1/255, normalise with CLIP's mean
and std. The resize runs on the host with PIL itself, which is the reference's own
arithmetic and therefore exact: float images in [0, 1] are first quantised to uint8 with
round(x * 255), which loses nothing for images read from 8-bit files. Everything after
the resize (`image_features`, `text_features`, `cosine`) is pure and jittable, so a
caller can shard it over a mesh's batch axis.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from tip_jax.models.clip import CLIPModel
from tip_jax.models.tokenizer import tokenize

Array = jax.Array

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def resize_and_crop(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
  """[0, 1] RGB images, (B, H, W, 3) or a list of (H, W, 3) of any sizes -> (B, size, size, 3)
  uint8: shortest side to `size` with PIL bicubic, then the centre `size` x `size` crop.

  The long side becomes int(size * long / short) and the crop starts at
  (length - size) // 2, both as transformers computes them.
  """
  out = []
  for image in images:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"CLIP takes RGB images of shape (H, W, 3); got {image.shape}")
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    h, w = pixels.shape[:2]
    short, long = min(h, w), max(h, w)
    long = int(size * long / short)
    new_h, new_w = (long, size) if w <= h else (size, long)
    resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out.append(resized[top:top + size, left:left + size])
  return np.stack(out)


def normalize(pixels: Array) -> Array:
  """uint8 pixels -> float32 (x / 255 - mean) / std, rounding as transformers does."""
  x = pixels.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(MEAN, jnp.float32)) / jnp.asarray(STD, jnp.float32)


def _unit(x: Array) -> Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def image_features(module: CLIPModel, params: Any, pixels: Array) -> Array:
  """(B, S, S, 3) uint8 from `resize_and_crop` -> (B, D) L2-normalised image embeddings."""
  return _unit(module.apply({"params": params}, normalize(pixels),
                            method=CLIPModel.get_image_features))


def text_features(module: CLIPModel, params: Any, input_ids: Array) -> Array:
  """(B, T) token ids -> (B, D) L2-normalised text embeddings."""
  return _unit(module.apply({"params": params}, input_ids, method=CLIPModel.get_text_features))


def cosine(a: Array, b: Array) -> Array:
  """Row-wise cosine of two (B, D) batches of unit vectors -> (B,)."""
  return jnp.sum(a * b, axis=-1)


_image_features = jax.jit(image_features, static_argnums=0)
_text_features = jax.jit(text_features, static_argnums=0)


class CLIPScorer(NamedTuple):
  """A CLIP model, its params and its tokenizer; `tip_jax.convert.clip.load_clip` builds one.

  Methods take host arrays (images in [0, 1], NHWC, RGB, any size) and run the
  jitted forward; batches of differing sizes compile once each.
  """

  module: CLIPModel
  params: Any
  tokenizer: Any

  def image_embeds(self, images: np.ndarray | Sequence[np.ndarray]) -> Array:
    """(B, D) L2-normalised image embeddings."""
    pixels = resize_and_crop(images, self.module.config.vision.image_size)
    return _image_features(self.module, self.params, jnp.asarray(pixels))

  def text_embeds(self, captions: Sequence[str]) -> Array:
    """(B, D) L2-normalised caption embeddings (over-long captions are cut at 77 tokens)."""
    ids = tokenize(self.tokenizer, captions, self.module.config.text.max_position_embeddings)
    return _text_features(self.module, self.params, jnp.asarray(ids))

  def clip_i(self, pred: np.ndarray | Sequence[np.ndarray],
             ref: np.ndarray | Sequence[np.ndarray]) -> Array:
    """(B,) raw cosine between each restored image and its reference."""
    return cosine(self.image_embeds(pred), self.image_embeds(ref))

  def clip_t(self, pred: np.ndarray | Sequence[np.ndarray], captions: Sequence[str]) -> Array:
    """(B,) raw cosine between each restored image and its caption."""
    if len(pred) != len(captions):
      raise ValueError(f"{len(pred)} images but {len(captions)} captions")
    return cosine(self.image_embeds(pred), self.text_embeds(captions))

"""A local transformers CLIPModel folder -> the CLIP-I/-T scorer.

The folder is what `CLIPModel.save_pretrained` writes (or a Hub snapshot such as
openai/clip-vit-large-patch14, the ViT-L/14 the paper's d = 768 implies): config.json
and model.safetensors, plus usually the tokenizer's vocab.json and merges.txt. Nothing
is downloaded. The loader lives here rather than in `tip_jax.metrics`, which sits below
the weight conversion it needs.
"""

from __future__ import annotations

import os

from absl import logging

from tip_jax.convert.diffusers import load_component, weight_files
from tip_jax.errors import CheckpointError
from tip_jax.metrics.clip import CLIPScorer
from tip_jax.models.layers import ModelOptions
from tip_jax.models.tokenizer import bundled_tokenizer, load_tokenizer

_WANTED = ("an HF CLIPModel folder (config.json + model.safetensors, e.g. a local copy of "
           "openai/clip-vit-large-patch14)")


def load_clip(folder: str, options: ModelOptions | None = None) -> CLIPScorer:
  """Builds the scorer from `folder`; a missing file is one CheckpointError naming it.

  The folder's own tokenizer files are used when present. Without them the bundled
  BPE table stands in: every OpenAI CLIP shares that vocabulary, and the pooled text
  feature is read at the first end-of-text token, which the causal mask keeps blind to
  whichever pad token follows.
  """
  if not os.path.isfile(os.path.join(folder, "config.json")):
    raise CheckpointError(f"{os.path.join(folder, 'config.json')}: not found; the CLIP metrics "
                          f"need {_WANTED}")
  try:
    weight_files(folder, "model")
  except CheckpointError:
    raise CheckpointError(f"{os.path.join(folder, 'model.safetensors')}: not found; the CLIP "
                          f"metrics need {_WANTED}") from None
  module, params = load_component(folder, "clip", options)
  if os.path.isfile(os.path.join(folder, "vocab.json")):
    tokenizer = load_tokenizer(folder)
  else:
    logging.info("%s has no vocab.json: using the bundled CLIP tokenizer", folder)
    tokenizer = bundled_tokenizer()
  if len(tokenizer) != module.config.text.vocab_size:
    raise CheckpointError(f"{folder}: the tokenizer has {len(tokenizer)} tokens, the text "
                          f"model {module.config.text.vocab_size}; add the model's own "
                          "vocab.json and merges.txt to the folder")
  return CLIPScorer(module, params, tokenizer)

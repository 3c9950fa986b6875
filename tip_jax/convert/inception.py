"""pytorch-fid's Inception weights (`pt_inception-2015-12-05-6726825d.pth`) -> our file.

The state dict is read without torch (`torch_file`), renamed onto
`tip_jax.metrics.inception.InceptionV3`'s params and written as one safetensors file
with flat "a/b/c" keys, which `load_inception` reads. Renames: a BasicConv2d's
`conv.weight` (O, I, kh, kw) -> `conv/kernel` (kh, kw, I, O); its BatchNorm's
`weight, bias, running_mean, running_var` -> `bn/scale, bias, mean, var`.
Left out on purpose: `fc.*` (the 1008-way classifier after pool3, which FID does not
use) and `*.num_batches_tracked` (a training counter).
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging
from safetensors.numpy import save

from tip_jax.convert import torch_file
from tip_jax.errors import CheckpointError
from tip_jax.image_io import write_atomically
from tip_jax.metrics import inception

_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_IGNORED_PREFIXES = ("fc.",)
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def _flax_name(key: str, source: str) -> str:
  *path, layer, leaf = key.split(".")
  if layer == "conv" and leaf == "weight":
    return "/".join([*path, "conv", "kernel"])
  if layer == "bn" and leaf in _BN_NAMES:
    return "/".join([*path, "bn", _BN_NAMES[leaf]])
  raise CheckpointError(f"{source}: unexpected key {key!r}; not pytorch-fid's FID Inception "
                        "state dict")


def convert_state_dict(state: dict[str, np.ndarray], source: str = "state dict"
                       ) -> dict[str, np.ndarray]:
  """Flat torch-named state dict -> flat {"a/b/c": float32 array} of InceptionV3."""
  out = {}
  for key, value in state.items():
    if key.startswith(_IGNORED_PREFIXES) or key.endswith(_IGNORED_SUFFIXES):
      continue
    value = np.asarray(value, np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    out[_flax_name(key, source)] = np.ascontiguousarray(value)
  inception.check_params(out, source)
  return out


def convert_file(src: str, dst: str) -> int:
  """Converts `src` (.pth) into `dst` (.safetensors); returns the number of tensors."""
  flat = convert_state_dict(torch_file.load_state_dict(src), src)
  data = save(flat, metadata={"format": "tip_jax FID InceptionV3 pool3",
                              "source": os.path.basename(src)})
  write_atomically(dst, lambda f: f.write(data))
  logging.info("wrote %d tensors of the FID Inception to %s", len(flat), dst)
  return len(flat)

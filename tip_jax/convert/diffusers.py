"""Diffusers-format folders (config.json + safetensors) <-> Flax modules and param trees.

No torch: tensors are read with `safetensors.numpy`. Conversion is a rename plus a
transpose, because the Flax modules use diffusers' / transformers' module names:
`down_blocks.0.attentions.1.proj_in.weight` -> `down_blocks_0/attentions_1/proj_in/kernel`.
Conv kernels go OIHW -> HWIO, linear kernels (out, in) -> (in, out); norms' `weight`
is Flax's `scale`; embeddings keep their layout. Any missing, unexpected or
mis-shaped key stops the load with one error that names it.

The same rules load a transformers `CLIPModel` folder (component "clip"), whose
weights the CLIP-I/-T scorer reads (`tip_jax.convert.clip`).

`save_backbone` is the way back (a backbone tip_jax pretrained -> a folder diffusers
and transformers read): each Flax path is renamed by `_torch_key`, which must map back
through `_flax_path` to the same path, so the two directions share one set of rules.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save

from tip_jax.errors import CheckpointError
from tip_jax.image_io import write_atomically
from tip_jax.models import params as params_lib
from tip_jax.models.backbone import Backbone, Part
from tip_jax.models.layers import ModelOptions


@dataclasses.dataclass(frozen=True)
class _Component:
  weights_name: str          # file stem diffusers / transformers use
  strip_prefix: str          # key prefix that has no Flax counterpart
  ignored: tuple[str, ...]   # buffers saved by some versions, not params
  build: Callable[[dict, ModelOptions], nn.Module]


def _build_unet(cfg, options):
  from tip_jax.models import unet
  return unet.UNet2DConditionModel(unet.UNetConfig.from_diffusers(cfg), options)


def _build_vae(cfg, options):
  from tip_jax.models import vae
  return vae.AutoencoderKL(vae.VAEConfig.from_diffusers(cfg), options)


def _build_text_encoder(cfg, options):
  from tip_jax.models import clip_text
  return clip_text.CLIPTextModel(clip_text.CLIPTextConfig.from_transformers(cfg), options)


def _build_controlnet(cfg, options):
  from tip_jax.models import controlnet
  return controlnet.ControlNetModel(controlnet.ControlNetConfig.from_diffusers(cfg), options)


def _build_clip(cfg, options):
  from tip_jax.models import clip
  return clip.CLIPModel(clip.CLIPConfig.from_transformers(cfg), options)


COMPONENTS = {
    "unet": _Component("diffusion_pytorch_model", "", (), _build_unet),
    "vae": _Component("diffusion_pytorch_model", "", (), _build_vae),
    "text_encoder": _Component("model", "text_model.", ("text_model.embeddings.position_ids",
                                                          "embeddings.position_ids"),
                               _build_text_encoder),
    "controlnet": _Component("diffusion_pytorch_model", "", (), _build_controlnet),
    # logit_scale only sharpens CLIP's contrastive softmax; CLIP-I/-T are raw cosines.
    "clip": _Component("model", "", ("logit_scale", "text_model.embeddings.position_ids",
                                     "vision_model.embeddings.position_ids"), _build_clip),
}

# Attention names of diffusers < 0.14 VAEs, still found in many converted checkpoints.
_LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out_0"}
# Torch module names that end in `_<digits>` themselves (the UNet's time_embedding.linear_1);
# everywhere else `name_<i>` is entry i of a module list (`to_out.0`, `down_blocks.1`).
_SUFFIXED_NAMES = ("linear_1", "linear_2")
# What `model_index.json` names for the model parts of an exported folder.
_PIPELINE_CLASSES = {"unet": ("diffusers", "UNet2DConditionModel"),
                     "vae": ("diffusers", "AutoencoderKL"),
                     "text_encoder": ("transformers", "CLIPTextModel"),
                     "tokenizer": ("transformers", "CLIPTokenizer")}


def component_dir(path: str, name: str) -> str:
  """`path/name` when it holds a config.json, else `path` itself."""
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: no such checkpoint folder")
  for candidate in (os.path.join(path, name), path):
    if os.path.isfile(os.path.join(candidate, "config.json")):
      return candidate
  raise CheckpointError(f"{path} is not a diffusers checkpoint: no config.json in it or in "
                        f"{os.path.join(path, name)}")


def read_config(folder: str) -> dict:
  try:
    with open(os.path.join(folder, "config.json")) as f:
      cfg = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{folder}/config.json is not valid JSON: {e}") from None
  if not isinstance(cfg, dict):
    raise CheckpointError(f"{folder}/config.json holds a {type(cfg).__name__}, not a config object")
  return cfg


def weight_files(folder: str, stem: str) -> list[str]:
  """The safetensors files of one weights variant: fp32 first, then `.fp16.`."""
  for variant in ("", ".fp16"):
    single = os.path.join(folder, f"{stem}{variant}.safetensors")
    if os.path.isfile(single):
      return [single]
    index = os.path.join(folder, f"{stem}{variant}.safetensors.index.json")
    if os.path.isfile(index):
      try:
        with open(index) as f:
          shards = sorted(set(json.load(f)["weight_map"].values()))
      except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index}: not a valid safetensors shard index ({e!r})") from None
      return [os.path.join(folder, s) for s in shards]
  others = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*")))
  raise CheckpointError(f"{folder}: no {stem}.safetensors (or .fp16 variant, or sharded index); "
                        f"found {others}. Only safetensors weights are read.")


def _flax_path(key: str, component: _Component, target: dict) -> tuple[str, ...]:
  parts: list[str] = []
  for p in key.removeprefix(component.strip_prefix).split("."):  # transformers 5 saves no prefix
    if p.isdigit() and parts:
      parts[-1] = f"{parts[-1]}_{p}"
    else:
      parts.append(_LEGACY_NAMES.get(p, p))
  leaf = parts[-1]
  if leaf == "weight":
    for candidate in ("kernel", "scale", "embedding"):
      if tuple(parts[:-1]) + (candidate,) in target:
        return tuple(parts[:-1]) + (candidate,)
  return tuple(parts)


def _to_flax(value: np.ndarray, path: tuple[str, ...], expected: tuple[int, ...]) -> np.ndarray:
  if path[-1] == "kernel":
    # legacy 1x1-conv attention projections; any other 4-D tensor fails the shape check
    if value.ndim == 4 and value.shape[2:] == (1, 1) and len(expected) == 2:
      value = value[:, :, 0, 0]
    value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
  return value


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  """A Flax param shape in the checkpoint's layout (inverse of `_to_flax`'s transpose)."""
  if path[-1] == "kernel":
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else tuple(shape[::-1])
  return tuple(shape)


def convert_state_dict(state: dict[str, np.ndarray], module: nn.Module, name: str,
                       source: str = "checkpoint") -> dict:
  """Maps a flat torch-named state dict onto `module`'s param tree (unboxed, param dtype)."""
  component = COMPONENTS[name]
  target = flatten_dict(params_lib.param_shapes(module))
  out = {}
  for key, value in state.items():
    if key in component.ignored:
      continue
    path = _flax_path(key, component, target)
    if path not in target:
      raise CheckpointError(f"{source}: unexpected key {key!r} (shape {tuple(value.shape)}) has "
                            f"no place in the {name} model (looked for {'/'.join(path)})")
    expected = target[path]
    stored = tuple(value.shape)
    value = _to_flax(np.asarray(value), path, expected.shape)
    if value.shape != expected.shape:
      raise CheckpointError(f"{source}: key {key!r} has shape {stored}, the {name} model "
                            f"expects {_torch_shape(path, expected.shape)} (Flax param "
                            f"{'/'.join(path)} of shape {tuple(expected.shape)})")
    out[path] = jnp.asarray(value, dtype=expected.dtype)
  missing = [p for p in target if p not in out]
  if missing:
    shape = tuple(target[missing[0]].shape)
    raise CheckpointError(f"{source}: missing key for {'/'.join(missing[0])} (shape {shape}) "
                          f"and {len(missing) - 1} more")
  return unflatten_dict(out)


def load_component(path: str, name: str, options: ModelOptions | None = None
                   ) -> Part:
  """Loads `unet | vae | text_encoder | controlnet | clip` from a diffusers-format folder
  (`clip`: a transformers CLIPModel folder)."""
  if name not in COMPONENTS:
    raise CheckpointError(f"unknown component {name!r}; expected one of {sorted(COMPONENTS)}")
  folder = component_dir(path, name)
  try:
    module = COMPONENTS[name].build(read_config(folder), options or ModelOptions())
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{folder}/config.json does not describe a supported {name}: {e}") from None
  state = {}
  for file in weight_files(folder, COMPONENTS[name].weights_name):
    try:
      state.update(load_file(file))
    except Exception as e:  # safetensors raises its own error types for corrupt files
      raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None
  logging.info("loaded %d tensors for %s from %s", len(state), name, folder)
  return Part(module, convert_state_dict(state, module, name, source=folder))



def load_backbone(path: str, options: ModelOptions | None = None) -> Backbone:
  """Loads a whole SD folder: unet, vae, text_encoder, tokenizer and scheduler config.

  The UNet's prediction type ("epsilon" or "v_prediction") comes from the scheduler
  config, where diffusers keeps it.
  """
  from tip_jax.models.tokenizer import load_tokenizer  # transformers is slow to import

  parts = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
  missing = [p for p in parts if not os.path.isdir(os.path.join(path, p))]
  if not os.path.isdir(path) or len(missing) == len(parts):
    raise CheckpointError(f"{path} is not a diffusers Stable Diffusion folder (expected "
                          f"subfolders {', '.join(parts)})")
  if missing:
    raise CheckpointError(f"{path}: missing subfolder(s) {', '.join(missing)}")
  sched_file = os.path.join(path, "scheduler", "scheduler_config.json")
  try:
    with open(sched_file) as f:
      scheduler_config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{sched_file}: unreadable scheduler config ({e})") from None
  backbone = Backbone(unet=load_component(path, "unet", options),
                      vae=load_component(path, "vae", options),
                      text_encoder=load_component(path, "text_encoder", options),
                      tokenizer=load_tokenizer(os.path.join(path, "tokenizer")),
                      scheduler_config=scheduler_config)
  return backbone.with_prediction_type(scheduler_config.get("prediction_type", "epsilon"))


def _torch_key(path: tuple[str, ...]) -> str:
  """A Flax param path -> its torch state-dict key (without a `strip_prefix`, as
  transformers 5 writes); the inverse of `_flax_path`."""
  parts = []
  for p in path[:-1]:
    head, _, index = p.rpartition("_")
    parts += [head, index] if head and index.isdigit() and p not in _SUFFIXED_NAMES else [p]
  leaf = path[-1]
  return ".".join(parts + ["weight" if leaf in ("kernel", "scale", "embedding") else leaf])


def to_state_dict(params: dict, name: str) -> dict[str, np.ndarray]:
  """`convert_state_dict`'s inverse: a param tree -> torch-named float32 arrays in
  torch layout (conv kernels OIHW, linear kernels (out, in))."""
  component = COMPONENTS[name]
  flat = flatten_dict(params)
  out = {}
  for path, value in flat.items():
    key = _torch_key(path)
    if _flax_path(key, component, flat) != path:  # a name the rules above cannot invert
      raise ValueError(f"{name}: param {'/'.join(path)} has no torch name that reads back")
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    out[key] = np.ascontiguousarray(value)
  return out


def _write_json(path: str, obj: dict) -> None:
  text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
  write_atomically(path, lambda f: f.write(text.encode()))


def save_component(folder: str, name: str, config: dict, params: dict,
                   dtype: str = "float32") -> None:
  """Writes `folder/config.json` and the safetensors file diffusers / transformers read;
  `dtype` float16 halves the file (as SD's fp16 variants do; readers upcast)."""
  os.makedirs(folder, exist_ok=True)
  _write_json(os.path.join(folder, "config.json"), config)
  tensors = {k: v.astype(dtype) for k, v in to_state_dict(params, name).items()}
  blob = save(tensors, metadata={"format": "pt"})
  write_atomically(os.path.join(folder, f"{COMPONENTS[name].weights_name}.safetensors"),
                   lambda f: f.write(blob))


def save_backbone(backbone: Backbone, path: str, dtype: str = "float32") -> None:
  """Writes `backbone` as a diffusers Stable Diffusion folder: unet/, vae/,
  text_encoder/ (safetensors in `dtype`), tokenizer/, scheduler/ and model_index.json,
  which `load_backbone`, diffusers' `from_pretrained` (models and pipeline) and
  transformers' `CLIPTextModel.from_pretrained` read."""
  from tip_jax.models.tokenizer import save_tokenizer  # transformers is slow to import

  tok = backbone.tokenizer
  save_component(os.path.join(path, "unet"), "unet",
                 backbone.unet.module.config.to_diffusers(), backbone.unet.params, dtype)
  save_component(os.path.join(path, "vae"), "vae",
                 backbone.vae.module.config.to_diffusers(), backbone.vae.params, dtype)
  save_component(os.path.join(path, "text_encoder"), "text_encoder",
                 backbone.text_encoder.module.config.to_transformers(
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id),
                 backbone.text_encoder.params, dtype)
  save_tokenizer(tok, os.path.join(path, "tokenizer"))
  scheduler = {"_class_name": "DDIMScheduler", **backbone.scheduler_config,
               "prediction_type": backbone.prediction_type}
  os.makedirs(os.path.join(path, "scheduler"), exist_ok=True)
  _write_json(os.path.join(path, "scheduler", "scheduler_config.json"), scheduler)
  _write_json(os.path.join(path, "model_index.json"), {
      "_class_name": "StableDiffusionPipeline", "requires_safety_checker": False,
      "safety_checker": [None, None], "feature_extractor": [None, None],
      **{k: list(v) for k, v in _PIPELINE_CLASSES.items()},
      "scheduler": ["diffusers", scheduler["_class_name"]]})
  logging.info("wrote a diffusers Stable Diffusion folder to %s", path)

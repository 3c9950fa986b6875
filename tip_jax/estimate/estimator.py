"""A trained degradation estimator: image in, restoration prompt out.

    estimator = load()                          # the one shipped in tip_jax/assets/estimator
    estimate = estimator.estimate_file("photo.jpg")
    estimate.prompt()     # "Deblur with sigma 1.4; Dejpeg with quality 62;"
    estimate.to_json()    # per stage: present, probability, value, source

An image of any size is read as a grid of up to 4 x 4 crops of the training crop size
(offsets on multiples of 8, the JPEG block grid), and the network's outputs are averaged
over them; a side shorter than the crop is reflect-padded to it. Each stage is named
when its probability passes its threshold, with its strength rounded to the prompt's
grid; when the blind probability passes its threshold the prompt is TIP's blind one.
A JPEG file's quality is read from its quantisation tables instead (`jpeg_quality`):
exact, and marked `source: "file"`. The estimate reads the image as given: an
"Upsample to Fx" clause says it looks like a small image brought up F times, already
at the size to restore, so a restorer using it does not resize it again.

On disk (`save`, `load`): `model.safetensors` (the params, flattened with "/") and
`config.json` (`EstimatorSpec`: network, crop, the training ranges of the TIP model it
serves, thresholds, and how it was trained).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save

from tip_jax.degrade import BLIND_PROMPT, prompts
from tip_jax.errors import CheckpointError, ImageError
from tip_jax.estimate import heads
from tip_jax.estimate.jpeg_quality import ijg_quality
from tip_jax.estimate.network import DegradationEstimator, NetworkConfig
from tip_jax.image_io import as_rgb, quantization_tables, read_rgb, write_atomically
from tip_jax.models import params as params_lib

FORMAT = 1
WEIGHTS, SPEC = "model.safetensors", "config.json"
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "assets", "estimator")
GRID = 4            # crops per side, at most
_JPEG_BLOCK = 8


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
  """What `config.json` holds besides the weights.

  crop: the training crop side; ranges: {stage: (low, high)} of the TIP model served
  (strengths are written within them); thresholds: {"blind" or stage: probability};
  trained: how it was made (config, seed, step), for the record.
  """

  network: NetworkConfig
  crop: int
  ranges: dict[str, tuple[float, float]]
  thresholds: dict[str, float]
  trained: dict[str, Any] = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {"format": FORMAT, "network": dataclasses.asdict(self.network), "crop": self.crop,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "thresholds": dict(self.thresholds), "trained": dict(self.trained)}

  @classmethod
  def from_json(cls, data: dict) -> EstimatorSpec:
    n = data["network"]
    return cls(network=NetworkConfig(**{**n, "widths": tuple(n["widths"])}),
               crop=int(data["crop"]),
               ranges={k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()},
               thresholds={k: float(v) for k, v in data["thresholds"].items()},
               trained=dict(data.get("trained", {})))


@dataclasses.dataclass(frozen=True)
class StageEstimate:
  present: bool
  probability: float       # the network's probability that the stage was applied
  value: float             # its strength on the prompt grid (from `source`)
  source: str = "estimate"  # "estimate" (the network) or "file" (JPEG tables)
  exact: bool = True       # source "file": the tables are libjpeg's for `value`


@dataclasses.dataclass(frozen=True)
class Estimate:
  """One image's estimate; `prompt()` is what TIP is given."""

  blind: bool
  blind_probability: float
  stages: dict[str, StageEstimate]

  def as_stages(self, with_values: bool = True) -> prompts.Stages:
    values = {f: s.value for f, s in self.stages.items() if s.present}
    return prompts.Stages(**values, with_values=with_values)

  def prompt(self, with_values: bool = True) -> str:
    """TIP's blind prompt, or the detected stages in the canonical form ("" if none);
    `with_values=False` names them only (for models trained without strengths)."""
    return BLIND_PROMPT if self.blind else self.as_stages().prompt(with_values)

  def to_json(self) -> dict:
    return {"prompt": self.prompt(),
            "blind": {"chosen": self.blind, "probability": round(self.blind_probability, 4)},
            "stages": {f: {**dataclasses.asdict(s), "probability": round(s.probability, 4)}
                       for f, s in self.stages.items()}}


@functools.partial(jax.jit, static_argnames="module")
def _outputs(params: dict, crops: jax.Array, *, module: nn.Module) -> jax.Array:
  """Mean raw outputs over a batch of crops of one image."""
  return jnp.mean(module.apply({"params": params}, crops), axis=0)


def _offsets(size: int, crop: int) -> np.ndarray:
  spread = np.round(np.linspace(0, size - crop, GRID)).astype(int)
  return np.unique(spread // _JPEG_BLOCK * _JPEG_BLOCK)


def _sigmoid(x: float) -> float:
  return float(1.0 / (1.0 + np.exp(-x)))


class Estimator:
  """The network's params and spec; `estimate` / `estimate_file` write prompts."""

  def __init__(self, params: dict, spec: EstimatorSpec, source: str = "(in memory)"):
    self.params, self.spec, self.source = params, spec, source
    self.module = DegradationEstimator(spec.network)

  def crops(self, image: np.ndarray) -> np.ndarray:
    """uint8 image (grey, RGB or RGBA) -> the (N, crop, crop, 3) float32 crops in [-1, 1]
    the estimate averages over; ImageError for a side of half the crop or less."""
    rgb = as_rgb(image)
    c = self.spec.crop
    h, w = rgb.shape[:2]
    if min(h, w) <= c // 2:
      raise ImageError(f"{w}x{h} pixels is too small to estimate its degradation (at least "
                       f"{c // 2 + 1} pixels a side)")
    rgb = np.pad(rgb, ((0, max(c - h, 0)), (0, max(c - w, 0)), (0, 0)), mode="reflect")
    out = [rgb[y:y + c, x:x + c] for y in _offsets(rgb.shape[0], c)
           for x in _offsets(rgb.shape[1], c)]
    return np.stack(out).astype(np.float32) / 127.5 - 1.0

  def outputs(self, image: np.ndarray) -> np.ndarray:
    """The network's raw outputs (`heads.OUTPUTS`), averaged over the image's crops."""
    return np.asarray(_outputs(self.params, jnp.asarray(self.crops(image)), module=self.module))

  def decide(self, outputs: np.ndarray) -> Estimate:
    """Raw outputs -> the estimate (thresholds, strengths on the prompt grid)."""
    t = self.spec.thresholds
    blind_logit, present, strength = heads.split(np.asarray(outputs)[None])
    stages = {}
    for i, field in enumerate(heads.STAGES):
      p = _sigmoid(present[0, i])
      value = prompts.quantize(field, heads.to_value(field, strength[0, i], self.spec.ranges))
      stages[field] = StageEstimate(present=p > t[field], probability=p, value=value)
    p_blind = _sigmoid(blind_logit[0])
    return Estimate(blind=p_blind > t["blind"], blind_probability=p_blind, stages=stages)

  def estimate(self, image: np.ndarray) -> Estimate:
    """From the pixels alone: uint8 (H, W), (H, W, 1|3|4)."""
    return self.decide(self.outputs(image))

  def estimate_file(self, path: str) -> Estimate:
    """From an image file; a JPEG file's quality comes from its tables (see the module
    docstring): a file above the training range's top quality is taken as holding no
    JPEG degradation TIP would remove. ImageError (one line, naming the file)."""
    image = read_rgb(path)
    try:
      estimate = self.estimate(image)
    except ImageError as e:
      raise ImageError(f"{path}: {e}") from None
    found = ijg_quality(quantization_tables(path))
    if found is None:
      return estimate
    jpeg = estimate.stages["jpeg_quality"]
    stage = StageEstimate(present=found.quality <= self.spec.ranges["jpeg_quality"][1],
                          probability=jpeg.probability, value=float(found.quality),
                          source="file", exact=found.exact)
    return dataclasses.replace(estimate, stages={**estimate.stages, "jpeg_quality": stage})

  def save(self, folder: str) -> None:
    """Writes `model.safetensors` and `config.json` into `folder` (each atomically)."""
    flat = {"/".join(k): np.asarray(v, np.float32)
            for k, v in flatten_dict(jax.device_get(self.params)).items()}
    data = save(flat, metadata={"format": "tip_jax degradation estimator"})
    write_atomically(os.path.join(folder, WEIGHTS), lambda f: f.write(data))
    text = json.dumps(self.spec.to_json(), indent=1) + "\n"
    write_atomically(os.path.join(folder, SPEC), lambda f: f.write(text.encode()))


def load(path: str | None = None) -> Estimator:
  """The estimator in folder `path` (default: the shipped one, `DEFAULT_PATH`); a
  missing or unreadable file is a CheckpointError naming it."""
  folder = path or DEFAULT_PATH
  spec_file, weights_file = os.path.join(folder, SPEC), os.path.join(folder, WEIGHTS)
  for file in (spec_file, weights_file):
    if not os.path.isfile(file):
      raise CheckpointError(f"{file}: no such file (the degradation estimator; train one "
                            "with configs/estimator.py)")
  try:
    with open(spec_file, encoding="utf-8") as f:
      spec = EstimatorSpec.from_json(json.load(f))
    flat = load_file(weights_file)
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{folder}: not a degradation estimator ({type(e).__name__}: "
                          f"{e})") from None
  except Exception as e:  # safetensors raises its own error types for corrupt files
    raise CheckpointError(f"{weights_file}: not a readable safetensors file ({e})") from None
  expected = {"/".join(k): v.shape
              for k, v in flatten_dict(params_lib.param_shapes(
                  DegradationEstimator(spec.network))).items()}
  got = {k: v.shape for k, v in flat.items()}
  if got != expected:
    wrong = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
    raise CheckpointError(f"{weights_file}: does not match the network in {spec_file} "
                          f"(first difference: {wrong[0]})")
  params = unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
  return Estimator(params, spec, source=folder)

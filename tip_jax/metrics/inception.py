"""pytorch-fid's Inception-v3 up to pool3 (2048-d): the network behind FID.

This is torchvision's `inception_v3` as pytorch-fid patches it to reproduce the
TensorFlow graph of 2015-12-05 that the original FID used: Mixed_5b-d, 6b-e and 7b
average-pool with `count_include_pad=False` (TensorFlow ignores the padding), and
Mixed_7c max-pools in its pool branch. Every conv is BasicConv2d: conv without bias,
BatchNorm (eps 1e-3, running statistics) and ReLU. Submodule and param names are
torchvision's (`Mixed_6b/branch7x7_2/conv/kernel`), so the converter is a rename.

Input: float [0, 1] NHWC RGB of any size, resized to 299x299 exactly as pytorch-fid
does (`F.interpolate(bilinear, align_corners=False)`: no antialiasing, unlike
`jax.image.resize` when it shrinks), then mapped to [-1, 1]. Output: the global
average of Mixed_7c, (B, 2048). Convs and the resize run at HIGHEST precision, so
features (and FID) do not depend on an accelerator's default bf16/TF32 matmuls.

Weights: `tip-convert-inception pt_inception-2015-12-05-6726825d.pth OUT.safetensors`
turns pytorch-fid's file into ours (flat "a/b/c" keys), read by `load_inception`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from jax import lax
from safetensors.numpy import load_file

from tip_jax.degrade import resizing
from tip_jax.errors import CheckpointError
from tip_jax.models import params as params_lib

RESOLUTION = 299
FEATURES = 2048
WEIGHTS_HINT = ("convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth with "
                "`tip-convert-inception IN.pth OUT.safetensors`")

Pair = tuple[int, int]


class FrozenBatchNorm(nn.Module):
  """BatchNorm with running statistics, eps 1e-3.

  The statistics are params (`mean`, `var`) rather than a `batch_stats` collection:
  this network only ever runs in inference, and one plain tree keeps the weight file
  a flat rename of the torch state dict."""
  epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (x.shape[-1],)
    scale = self.param("scale", nn.initializers.ones, shape)
    bias = self.param("bias", nn.initializers.zeros, shape)
    mean = self.param("mean", nn.initializers.zeros, shape)
    var = self.param("var", nn.initializers.ones, shape)
    alpha = scale / jnp.sqrt(var + self.epsilon)  # torch's CPU inference kernel: x*a + b
    return x * alpha + (bias - mean * alpha)


class BasicConv2d(nn.Module):
  features: int
  kernel: Pair
  strides: int = 1
  padding: Pair = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, self.strides, padding=((ph, ph), (pw, pw)),
                use_bias=False, precision=lax.Precision.HIGHEST, name="conv")(x)
    return nn.relu(FrozenBatchNorm(name="bn")(x))


def _conv(name: str, features: int, kernel: int | Pair, strides: int = 1,
          padding: int | Pair = 0) -> BasicConv2d:
  pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
  return BasicConv2d(features, pair(kernel), strides, pair(padding), name=name)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int, pad: int) -> jax.Array:
  return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):  # pytorch-fid's FIDInceptionA
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = _conv("branch1x1", 64, 1)(x)
    b5 = _conv("branch5x5_2", 64, 5, padding=2)(_conv("branch5x5_1", 48, 1)(x))
    b3 = _conv("branch3x3dbl_1", 64, 1)(x)
    b3 = _conv("branch3x3dbl_2", 96, 3, padding=1)(b3)
    b3 = _conv("branch3x3dbl_3", 96, 3, padding=1)(b3)
    bp = _conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):  # Mixed_6a, as torchvision
  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = _conv("branch3x3", 384, 3, strides=2)(x)
    bd = _conv("branch3x3dbl_1", 64, 1)(x)
    bd = _conv("branch3x3dbl_2", 96, 3, padding=1)(bd)
    bd = _conv("branch3x3dbl_3", 96, 3, strides=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):  # pytorch-fid's FIDInceptionC
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = _conv("branch1x1", 192, 1)(x)
    b7 = _conv("branch7x7_1", c7, 1)(x)
    b7 = _conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
    b7 = _conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
    bd = _conv("branch7x7dbl_1", c7, 1)(x)
    bd = _conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
    bd = _conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
    bd = _conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
    bd = _conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
    bp = _conv("branch_pool", 192, 1)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):  # Mixed_7a, as torchvision
  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = _conv("branch3x3_2", 320, 3, strides=2)(_conv("branch3x3_1", 192, 1)(x))
    b7 = _conv("branch7x7x3_1", 192, 1)(x)
    b7 = _conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = _conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = _conv("branch7x7x3_4", 192, 3, strides=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
  """pytorch-fid's FIDInceptionE_1 (`max_pool=False`, Mixed_7b: average pool without
  the padding) and FIDInceptionE_2 (`max_pool=True`, Mixed_7c)."""
  max_pool: bool

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = _conv("branch1x1", 320, 1)(x)
    b3 = _conv("branch3x3_1", 384, 1)(x)
    b3 = jnp.concatenate([_conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                          _conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
    bd = _conv("branch3x3dbl_1", 448, 1)(x)
    bd = _conv("branch3x3dbl_2", 384, 3, padding=1)(bd)
    bd = jnp.concatenate([_conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                          _conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], axis=-1)
    pooled = _max_pool_3x3(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
    bp = _conv("branch_pool", 192, 1)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_to_inception(images: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, 299, 299, C) as `F.interpolate(size=(299, 299), mode='bilinear',
  align_corners=False)`: the two-tap PyTorch kernel, no antialiasing."""
  size = images.shape[1:3]
  out = (RESOLUTION, RESOLUTION)
  one = lambda image: resizing.resize(image, size, out, resizing.BILINEAR, out)
  return jax.vmap(one)(images.astype(jnp.float32))


class InceptionV3(nn.Module):
  """float [0, 1] images (B, H, W, 3), any H, W -> pool3 features (B, 2048)."""

  def example_inputs(self, batch: int) -> tuple[jax.Array]:
    return (jnp.zeros((batch, RESOLUTION, RESOLUTION, 3), jnp.float32),)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = 2 * resize_to_inception(images) - 1
    x = _conv("Conv2d_1a_3x3", 32, 3, strides=2)(x)
    x = _conv("Conv2d_2a_3x3", 32, 3)(x)
    x = _conv("Conv2d_2b_3x3", 64, 3, padding=1)(x)
    x = _max_pool_3x3(x, 2, 0)
    x = _conv("Conv2d_3b_1x1", 80, 1)(x)
    x = _conv("Conv2d_4a_3x3", 192, 3)(x)
    x = _max_pool_3x3(x, 2, 0)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, name=name)(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


@functools.cache
def param_shapes() -> dict[str, tuple[int, ...]]:
  """{"a/b/c": shape} of every InceptionV3 param: the keys of our weight file."""
  tree = params_lib.param_shapes(InceptionV3())
  return {k: tuple(v.shape) for k, v in flatten_dict(tree, sep="/").items()}


def check_params(flat: dict[str, np.ndarray], source: str) -> None:
  """CheckpointError naming the first missing, unexpected or mis-shaped key."""
  expected = param_shapes()
  for key, value in flat.items():
    if key not in expected:
      raise CheckpointError(f"{source}: unexpected key {key!r} (shape {tuple(value.shape)}) "
                            "in FID Inception weights")
    if tuple(value.shape) != expected[key]:
      raise CheckpointError(f"{source}: key {key!r} has shape {tuple(value.shape)}, the FID "
                            f"Inception expects {expected[key]}")
  missing = [k for k in expected if k not in flat]
  if missing:
    raise CheckpointError(f"{source}: missing key {missing[0]!r} and {len(missing) - 1} more "
                          "in FID Inception weights")


@functools.partial(jax.jit, static_argnums=0)
def _apply(module: InceptionV3, params: dict, images: jax.Array) -> jax.Array:
  return module.apply({"params": params}, images)


class Inception(NamedTuple):
  """The FID network with its weights; `features` runs the jitted forward."""
  module: InceptionV3
  params: dict

  def features(self, images: jax.Array) -> jax.Array:
    """float [0, 1] (B, H, W, 3) -> (B, 2048) float32 pool3 features."""
    return _apply(self.module, self.params, images)


def load_inception(path: str) -> Inception:
  """Reads weights written by `tip-convert-inception`; CheckpointError if unusable."""
  try:
    flat = load_file(path)
  except FileNotFoundError:
    raise CheckpointError(f"{path}: no such file; {WEIGHTS_HINT}") from None
  except Exception as e:  # safetensors raises its own error types for corrupt files
    raise CheckpointError(f"{path}: not a readable safetensors file ({e}); {WEIGHTS_HINT}"
                          ) from None
  check_params(flat, path)
  params = unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}, sep="/")
  return Inception(InceptionV3(), params)

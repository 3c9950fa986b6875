"""The estimator network: a learned filter bank and JPEG's own transform, summarised by
their energies, and an MLP head with a logit or a strength per output
(`tip_jax.estimate.heads.OUTPUTS`).

    conv branch   a small residual conv encoder: full resolution first (noise lives in
                  single pixels), each later stage at half the size (blur, resizing)
    DCT branch    the 8 x 8 block DCT of the luma, on the JPEG grid (crops start on it)
                  and on the grid shifted by half a block; fixed, not learned: JPEG
                  quantises exactly these coefficients, so their statistics (how many
                  are zero, how much energy each frequency keeps) show its quality, and
                  blocking shows as the two grids' difference. A learned front end found
                  neither in the few hundred CPU steps the shipped estimator trains for.

Each stage's responses are pooled over the image into summaries per channel: the log
of their mean and geometric mean energy (`_log_energies`); each DCT coefficient adds its
median energy and the share of blocks where it is zero. The head sees those and the conv
branch's mean features, layer-normalised: degradations move some summaries against the
others (noise lifts the high frequencies' floor, blur lowers their mean), which the
norm keeps, while it centres the head's inputs (log energies sit far from 0). No
normalisation inside the filter banks: there a norm would divide responses by their
spread, and the spread is what noise, blur and JPEG strength *are*. Residual branches
and the head's last layer start at zero, so the net starts as a plain filter bank with
a constant output and trains stably without norms. Pooling makes the output independent
of the input size: training uses fixed crops, inference averages the outputs of a grid
of crops (`tip_jax.estimate.estimator`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tip_jax.estimate.heads import OUTPUTS
from tip_jax.models.layers import Array, ModelOptions, conv, dense, layer_norm

BLOCK = 8   # the JPEG block side


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
  """widths: channels per conv stage (stages after the first start with a stride-2
  conv); blocks: residual blocks per stage; head: the MLP's hidden width."""

  widths: tuple[int, ...] = (16, 32, 64, 128)
  blocks: int = 1
  head: int = 128


def _dct_matrix() -> np.ndarray:
  """The orthonormal 8-point DCT-II: row u is frequency u."""
  x, u = np.arange(BLOCK)[None, :], np.arange(BLOCK)[:, None]
  scale = np.where(u == 0, np.sqrt(1 / BLOCK), np.sqrt(2 / BLOCK))
  return (scale * np.cos((2 * x + 1) * u * np.pi / (2 * BLOCK))).astype(np.float32)


_DCT = _dct_matrix()
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)   # JPEG's (BT.601) Y


# Log energies span about [-14, 2]; scaled, they reach the head near unit size.
_LOG_SCALE = 0.2
# Energy floors: the DCT's is below 8-bit rounding noise (about 1.3e-6 per coefficient
# in [0, 1] units), so the faintest noise still shows; nothing learned sits before it.
# The conv stages' keeps the gradient into the learned filters bounded (`_log_energies`).
_DCT_FLOOR, _CONV_FLOOR = 1e-6, 1e-4


def _log_energies(x: Array, floor: float, median: bool = False) -> Array:
  """Per channel, summaries of a filter bank's responses over the image, in log space:
  their mean energy (set by edges and texture: what blur and resizing take away), their
  geometric mean energy and, with `median`, their median energy (both set by the flat
  regions: the floor that noise raises, which edges would swamp in a plain mean; the
  median of the finest responses is the classical robust noise estimate). The gaps
  between them measure how sparse the responses are, as JPEG's zeroed coefficients make
  them. Degradations scale energies, so in log space strengths are close to linear in
  these. (The median is a sort: on XLA's CPU it took 3/4 of a training step over the
  conv stages' 4096-position maps, so only the DCT branch's few blocks use it.)

  `floor` is added to every energy; it bounds the log's gradient (1 / sqrt(floor) at
  most)."""
  energy = jnp.square(x.astype(jnp.float32)).reshape(x.shape[0], -1, x.shape[-1]) + floor
  logs = [jnp.log(jnp.mean(energy, axis=1)), jnp.mean(jnp.log(energy), axis=1)]
  if median:
    logs.append(jnp.log(jnp.median(energy, axis=1)))
  return _LOG_SCALE * jnp.concatenate(logs, axis=-1)


def _dct_statistics(images: Array) -> Array:
  """(B, H, W, 3) in [-1, 1], H and W at least 16 -> (B, 2 x 4 x 64) DCT features: for
  the block grid at the top-left and the one shifted by half a block, per coefficient
  `_log_energies` and the share of blocks where it is below half a grey level."""
  luma = (images.astype(jnp.float32) + 1) * 127.5 @ jnp.asarray(_LUMA)
  dct = jnp.asarray(_DCT)
  out = []
  for offset in (0, BLOCK // 2):
    y = luma[:, offset:, offset:]
    b, h, w = y.shape
    h, w = h // BLOCK * BLOCK, w // BLOCK * BLOCK
    blocks = y[:, :h, :w].reshape(b, h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    coef = jnp.einsum("ux,bixjy,vy->bijuv", dct, blocks, dct,
                      precision=jax.lax.Precision.HIGHEST).reshape(b, h // BLOCK, w // BLOCK, -1)
    out += [_log_energies(coef / 255.0, _DCT_FLOOR, median=True),
            jnp.mean((jnp.abs(coef) < 0.5).astype(jnp.float32), axis=(1, 2))]
  return jnp.concatenate(out, axis=-1)


class _Residual(nn.Module):
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    h = conv(width, self.options, "conv1")(nn.silu(x))
    return x + conv(width, self.options, "conv2", zero_init=True)(nn.silu(h))


class DegradationEstimator(nn.Module):
  """(B, H, W, 3) images in [-1, 1], H and W at least 16 -> (B, len(OUTPUTS)) outputs."""

  config: NetworkConfig
  options: ModelOptions = ModelOptions()

  @nn.compact
  def __call__(self, images: Array) -> Array:
    c, o = self.config, self.options
    pooled = [_dct_statistics(images)]
    x = conv(c.widths[0], o, "conv_in")(images.astype(o.dtype))
    for i, width in enumerate(c.widths):
      if i:
        x = conv(width, o, f"down_{i}", stride=2)(nn.silu(x))
      for j in range(c.blocks):
        x = _Residual(o, name=f"stage_{i}_{j}")(x)
      pooled.append(_log_energies(x, _CONV_FLOOR))
    pooled.append(jnp.mean(nn.silu(x).astype(jnp.float32), axis=(1, 2)))
    h = layer_norm(o, "norm")(jnp.concatenate(pooled, axis=-1).astype(o.dtype))
    h = nn.silu(dense(c.head, o, "head_0", axes=("embed", "mlp"))(h))
    return dense(len(OUTPUTS), o, "head_1", axes=("mlp", None),
                 zero_init=True)(h).astype(jnp.float32)

  def example_inputs(self, batch: int = 1) -> tuple[Array, ...]:
    """Params do not depend on the input size."""
    return (jnp.zeros((batch, 64, 64, 3), jnp.float32),)

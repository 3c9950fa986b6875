"""What the estimator's outputs mean, and its training targets from `DegradeParams`.

`DegradationEstimator` returns one number per name in `OUTPUTS`:

    blind              logit: the image looks like Real-ESRGAN's mix, whose prompt is
                       "Remove all degradation" (TIP's blind prompt)
    <stage>/present    logit per stage of the parameterised pipeline, in prompt order
                       (blur, downsample, noise, JPEG)
    <stage>/strength   the stage's strength mapped onto [0, 1] over the training range of
                       the TIP model served (`TIPConfig.ranges`): in log space for blur
                       sigma, downsampling factor and noise sigma, whose visible effect is
                       relative (sigma 0.2 -> 0.4 is as plain as 1.5 -> 3), linearly for
                       JPEG quality (the quantisation tables scale linearly with it)

Strength targets outside a stage's range (and the stages a draw skipped) are never
compared: the loss masks them, and a prediction is clipped back into the range before it
is printed (`to_value`), so a written prompt never asks for a strength the TIP model did
not see in training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tip_jax.degrade import pipeline
from tip_jax.degrade.parameterized import STAGES as STAGE_FLAGS
from tip_jax.degrade.prompts import CLAUSES

STAGES = tuple(c.field for c in CLAUSES)
LOG_SPACE = {"blur_sigma": True, "downsample": True, "noise_sigma": True,
             "jpeg_quality": False}
OUTPUTS = (("blind",) + tuple(f"{s}/present" for s in STAGES)
           + tuple(f"{s}/strength" for s in STAGES))

Ranges = dict[str, tuple[float, float]]


def _space(field: str, value, xp=jnp):
  return xp.log(value) if LOG_SPACE[field] else value


def to_unit(field: str, value, ranges: Ranges, xp=jnp):
  """A strength -> [0, 1] over `ranges[field]` (beyond the range: outside [0, 1])."""
  low, high = ranges[field]
  return (_space(field, value, xp) - _space(field, low, np)) / (
      _space(field, high, np) - _space(field, low, np))


def to_value(field: str, unit: float, ranges: Ranges) -> float:
  """`to_unit`'s inverse, clipped into the range."""
  low, high = (_space(field, v, np) for v in ranges[field])
  x = low + float(np.clip(unit, 0.0, 1.0)) * (high - low)
  return float(np.exp(x)) if LOG_SPACE[field] else x


def split(outputs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(B, len(OUTPUTS)) -> blind logits (B,), presence logits (B, 4), strengths (B, 4)."""
  n = len(STAGES)
  return outputs[:, 0], outputs[:, 1:1 + n], outputs[:, 1 + n:1 + 2 * n]


def targets(params: pipeline.DegradeParams, ranges: Ranges) -> dict[str, jax.Array]:
  """Training targets of a batch's degradations (jit-safe): blind (B,) in {0, 1};
  present (B, 4) in {0, 1}, meaningful where not blind; strength (B, 4) in unit space,
  meaningful where present."""
  tip = params.tip
  present = jnp.stack([jnp.asarray(getattr(tip, STAGE_FLAGS[s][0])) for s in STAGES], -1)
  strength = []
  for i, s in enumerate(STAGES):
    low = ranges[s][0]
    value = jnp.where(present[:, i], jnp.asarray(getattr(tip, s), jnp.float32), low)
    strength.append(to_unit(s, value, ranges))
  return {"blind": (jnp.asarray(params.pipeline) == pipeline.REALESRGAN).astype(jnp.float32),
          "present": present.astype(jnp.float32), "strength": jnp.stack(strength, -1)}

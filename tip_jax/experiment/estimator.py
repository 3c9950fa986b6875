"""The degradation estimator's training step inputs and loss (`config.task` estimator).

The data are TIP's own: the same Grain batches of clean crops with per-example
degradation parameters drawn on the host (half Real-ESRGAN, half the parameterised
pipeline, as the TIP model the estimator serves was trained). `device_batch` degrades
them on device, each device its own rows, and rounds to 8 bits, as the image files the
estimator reads later are; the parameters themselves are the labels (`heads.targets`),
exact by construction.

Loss: binary cross-entropy of the blind logit on every example, of the four presence
logits on the parameterised examples only (a Real-ESRGAN draw has no per-stage truth),
and an L1 on the unit-space strength of each stage a draw applied, weighted by
`estimator.strength_weight`. L1 rather than squared error: strengths near the range
ends are partly invisible (sigma 0.2 blur barely changes an image) and would otherwise
dominate the gradient with errors the image cannot resolve.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from tip_jax.degrade import DegradeConfig, degrade_sharded, params_from_tree
from tip_jax.estimate import heads
from tip_jax.estimate.estimator import EstimatorSpec
from tip_jax.estimate.network import DegradationEstimator, NetworkConfig
from tip_jax.experiment.loss import Batch

# The pipeline batch keys the step reads (no prompts: the labels are the parameters).
DEVICE_KEYS = ("image", "degrade", "index")


def device_batch(batch: Batch, step: jax.Array, *, degrade_config: DegradeConfig, mesh: Mesh,
                 batch_axes: tuple[str, ...]) -> Batch:
  """A pipeline batch (`DEVICE_KEYS`) -> 8-bit degraded images in [-1, 1] and targets.
  The degradation's noise comes from each example's drawn seed, so `step` is unused."""
  del step
  clean = batch["image"].astype(jnp.float32) / 255.0
  params = params_from_tree(batch["degrade"], degrade_config)
  degraded = degrade_sharded(clean, params, mesh, batch_axes)
  stored = jnp.round(jnp.clip(degraded, 0.0, 1.0) * 255.0) / 255.0
  return {"images": stored * 2 - 1, **heads.targets(params, degrade_config.tip.ranges)}


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def loss(params: dict, frozen: dict, batch: Batch, *, module: DegradationEstimator,
         strength_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, logged parts) of the estimator `params` on `device_batch`'s output."""
  del frozen
  blind_logit, present_logits, strengths = heads.split(
      module.apply({"params": params}, batch["images"]))
  blind, present = batch["blind"], batch["present"]
  tip = (1.0 - blind)[:, None] * jnp.ones_like(present)
  applied = tip * present
  blind_bce = jnp.mean(optax.sigmoid_binary_cross_entropy(blind_logit, blind))
  present_bce = _masked_mean(optax.sigmoid_binary_cross_entropy(present_logits, present), tip)
  error = jnp.abs(strengths - batch["strength"])
  strength_l1 = _masked_mean(error, applied)
  parts = {"blind_bce": blind_bce, "presence_bce": present_bce, "strength_l1": strength_l1,
           "blind_accuracy": jnp.mean(((blind_logit > 0) == (blind > 0.5)).astype(jnp.float32))}
  correct = ((present_logits > 0) == (present > 0.5)).astype(jnp.float32)
  for i, stage in enumerate(heads.STAGES):
    parts[f"presence_accuracy/{stage}"] = _masked_mean(correct[:, i], tip[:, i])
    parts[f"strength_l1/{stage}"] = _masked_mean(error[:, i], applied[:, i])
  return blind_bce + present_bce + strength_weight * strength_l1, parts


def network_config(config: ml_collections.ConfigDict) -> NetworkConfig:
  e = config.estimator
  return NetworkConfig(widths=tuple(e.widths), blocks=int(e.blocks), head=int(e.head))


def spec(config: ml_collections.ConfigDict, degrade_config: DegradeConfig,
         **trained) -> EstimatorSpec:
  """What an estimator trained with `config` is, for `Estimator` (grids, export):
  `trained` adds to the record (step, ...)."""
  e = config.estimator
  thresholds = {"blind": float(e.blind_threshold),
                **{s: float(e.stage_threshold) for s in heads.STAGES}}
  return EstimatorSpec(
      network=network_config(config), crop=int(config.data.resolution),
      ranges=dict(degrade_config.tip.ranges), thresholds=thresholds,
      trained={"config": f"configs/estimator.py:{config.name}", "seed": int(config.seed),
               **trained})

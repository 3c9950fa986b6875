"""The training-degradation API: sampling statistics, prompts, determinism, sharding."""

import dataclasses

import jax
import numpy as np
import pytest

from tip_jax.degrade import (BLIND_PROMPT, DegradeConfig, degrade, degrade_blind,
                             degrade_sharded, parse_restoration_prompt, restoration_prompt,
                             sample_params)
from tip_jax.degrade import parameterized, prompts
from tip_jax.errors import PromptError
from tip_jax.experiment import sharding

SMALL = DegradeConfig(size=(64, 64))


@pytest.fixture(scope="module")
def many():
  """10k examples' parameters (host only, no device work)."""
  return sample_params(123, 10_000, SMALL)


def _within(freq: float, p: float, n: int, sigmas: float = 4.0) -> bool:
  return abs(freq - p) <= sigmas * np.sqrt(p * (1 - p) / n)


def test_pipeline_mix_and_stage_frequencies(many):
  params, texts = many
  n = params.batch
  tip = params.pipeline == 0
  assert _within(tip.mean(), 0.5, n)
  for flag in ("blur_on", "down_on", "noise_on", "jpeg_on"):
    assert _within(getattr(params.tip, flag)[tip].mean(), 0.5, tip.sum()), flag
  assert _within(params.tip.with_values[tip].mean(), 0.5, tip.sum())
  assert all(t == BLIND_PROMPT for t, k in zip(texts, params.pipeline) if k == 1)


def test_stage_values_cover_their_ranges(many):
  params, _ = many
  cfg = SMALL.tip
  for flag, field in (("blur_on", "blur_sigma"), ("down_on", "downsample"),
                      ("noise_on", "noise_sigma"), ("jpeg_on", "jpeg_quality")):
    values = getattr(params.tip, field)[getattr(params.tip, flag)]
    low, high = getattr(cfg, field)
    assert values.min() >= low and values.max() <= high, field
    # uniform on [low, high]: the mean within 4 standard errors
    se = (high - low) / np.sqrt(12 * len(values))
    assert abs(values.mean() - (low + high) / 2) <= 4 * se + 0.05 * (high - low) / 10, field


def test_realesrgan_draws_follow_the_x4plus_options(many):
  params, _ = many
  first, second = params.realesrgan.first, params.realesrgan.second
  n = params.batch
  assert _within(first.poisson.mean(), 0.5, n) and _within(first.gray.mean(), 0.4, n)
  assert _within(second.blur_on.mean(), 0.8, n)
  scale = first.scale
  assert _within((scale > 1).mean(), 0.2, n) and _within((scale == 1).mean(), 0.1, n)
  assert scale.min() >= 0.15 and scale.max() <= 1.5
  assert np.all(first.size == np.floor(64 * scale.astype(np.float64))[:, None].astype(int))
  sigma = first.sigma[~first.poisson] * 255
  assert sigma.min() >= 1 and sigma.max() <= 30
  assert 30 <= first.quality.min() and second.quality.max() <= 95
  is_sinc = params.realesrgan.final_kernel["kind"] == 6
  assert _within(is_sinc.mean(), 0.8, n)


def test_prompts_round_trip_through_the_parser(many):
  params, texts = many
  for text, kind in list(zip(texts, params.pipeline))[:2000]:
    if kind == 1:
      continue
    again = parse_restoration_prompt(text, SMALL)
    assert restoration_prompt(again, with_values=None) == [text]


def test_parsed_values_equal_the_applied_ones():
  p = parse_restoration_prompt("deblur with sigma 2;upsample to 3x ;DENOISE WITH SIGMA 0.05", SMALL)
  assert p.tip.blur_on[0] and p.tip.down_on[0] and p.tip.noise_on[0] and not p.tip.jpeg_on[0]
  np.testing.assert_allclose([p.tip.blur_sigma[0], p.tip.downsample[0], p.tip.noise_sigma[0]],
                             [2.0, 3.0, 0.05], rtol=1e-6)
  assert restoration_prompt(p) == ["Deblur with sigma 2.0; Upsample to 3.0x; "
                                   "Denoise with sigma 0.05;"]
  typed = parse_restoration_prompt("Deblur; Dejpeg;", SMALL)
  assert restoration_prompt(typed, with_values=None) == ["Deblur; Dejpeg;"]


@pytest.mark.parametrize("text,match", [
    ("Sharpen with sigma 2", "unknown clause 'Sharpen with sigma 2'"),
    ("Deblur with sigma 12", "clause 'Deblur with sigma 12': 12 is outside"),
    ("Deblur with sigma two", "cannot read clause 'Deblur with sigma two'"),
    ("Deblur with sigma 1; Deblur with sigma 2", "repeats Deblur"),
    (BLIND_PROMPT, "names no specific degradation"),
])
def test_bad_prompts_name_the_clause(text, match):
  with pytest.raises(PromptError, match=match):
    parse_restoration_prompt(text, SMALL)


def test_sampling_depends_only_on_seed_and_index():
  a, ta = sample_params(7, 4, SMALL, indices=[10, 11, 12, 13])
  b, tb = sample_params(7, 2, SMALL, indices=[12, 13])
  assert ta[2:] == tb
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x)[2:], y), a, b)


@pytest.fixture(scope="module")
def batch():
  r = np.random.default_rng(0)
  yy, xx = np.mgrid[0:64, 0:64] / 63.0
  base = np.stack([xx, yy, 0.5 + 0.3 * np.sin(6 * xx * yy)], -1)
  images = np.clip(base[None] + 0.1 * r.standard_normal((8, 64, 64, 3)), 0, 1)
  return images.astype(np.float32)


def test_degrade_is_deterministic_and_shards(batch):
  params, _ = sample_params(3, 8, SMALL)
  run = jax.jit(degrade)
  y1, y2 = np.asarray(run(batch, params)), np.asarray(run(batch, params))
  np.testing.assert_array_equal(y1, y2)
  assert y1.shape == batch.shape and 0 <= y1.min() and y1.max() <= 1
  assert np.all(np.abs(y1 - batch).reshape(8, -1).max(1) > 0)   # every example changed
  mesh = sharding.make_mesh({"data": 8})
  along_batch = lambda x: jax.device_put(
      x, sharding.batch_sharding(mesh, sharding.FSDP_RULES, np.ndim(x)))
  sharded = jax.jit(lambda x, p: degrade_sharded(x, p, mesh))(
      along_batch(batch), jax.tree.map(along_batch, params))
  assert sharded.sharding.spec[0] in ("data", ("data", "fsdp"))
  sharded = np.asarray(sharded)
  # Each device runs the batch-of-one program: bitwise equal to running it unsharded.
  one_by_one = np.concatenate([np.asarray(run(batch[i:i + 1], jax.tree.map(
      lambda x: x[i:i + 1], params))) for i in range(8)])
  np.testing.assert_array_equal(sharded, one_by_one)
  # Against the batch-of-8 program XLA may order float ops differently; that moves a
  # few values across a JPEG / 8-bit rounding boundary (measured: 142 of 98,304).
  differ = np.abs(sharded - y1) > 1e-5
  assert differ.mean() < 5e-3


def test_type_only_and_identity_prompts_apply(batch):
  identity = parse_restoration_prompt("", SMALL)
  out = np.asarray(jax.jit(degrade)(batch[:1], identity))
  np.testing.assert_allclose(out, np.round(batch[:1] * 255) / 255, atol=1e-6)
  blurred = np.asarray(jax.jit(degrade)(batch[:1], parse_restoration_prompt("Deblur;", SMALL)))
  assert np.abs(blurred - batch[:1]).mean() > 0.01
  assert parameterized.TIPConfig().defaults["blur_sigma"] == prompts.quantize("blur_sigma", 1.6)


def test_map_and_vmap_loops_agree(batch):
  """`lax.map` (only taken branches, bucketed canvas) == `vmap` (all branches, selected)."""
  params, _ = sample_params(11, 8, SMALL)
  out = {loop: np.asarray(jax.jit(degrade)(batch, params.replace(
      config=dataclasses.replace(SMALL, loop=loop)))) for loop in ("map", "vmap")}
  differ = np.abs(out["map"] - out["vmap"]) > 1e-5
  assert differ.mean() < 5e-3      # rounding-boundary flips only (see the sharding test)


def test_degrade_blind_gives_the_lq_and_what_training_gives(batch):
  """Benchmark sets store the LQ and the model's input: the latter is `degrade`'s
  Real-ESRGAN output, i.e. the LQ brought back with the bicubic of training."""
  params, texts = sample_params(5, 2, dataclasses.replace(SMALL, realesrgan_prob=1.0))
  assert texts == [BLIND_PROMPT] * 2
  lq, y = jax.jit(degrade_blind)(batch[:2], params)
  assert lq.shape == (2, 16, 16, 3)
  levels = np.asarray(lq) * 255
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)       # on the 8-bit grid
  np.testing.assert_array_equal(np.asarray(y), np.asarray(jax.jit(degrade)(batch[:2], params)))

"""TIPRestorer on tiny random models: determinism, padding, prompts, guidance, control
strength, tiles over devices, colour fix, and a 1536x1024 tiled restore (memory, seams)."""

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.fixtures.estimator import tiny_estimator
from tests.fixtures.restore import tiny_restorer

from tip_jax.degrade.parameterized import TIPConfig
from tip_jax.errors import CheckpointError, PromptError
from tip_jax.estimate import estimator as estimator_lib
from tip_jax.diffusion import colorfix
from tip_jax import restore as restore_lib
from tip_jax import sampling
from tip_jax.models import tip
from tip_jax.restore import TIPRestorer


def _image(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _gradient(h, w):
  yy, xx = np.mgrid[0:h, 0:w]
  return np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1).__mul__(255).astype(np.uint8)


@pytest.fixture(scope="module")
def restorer():
  return tiny_restorer()


def test_same_seed_same_image_any_size(restorer):
  image = _image(50, 70)   # not a multiple of the 32 px grid: padded, then cropped back
  first = restorer.restore(image, restoration_prompt="Deblur with sigma 2.0", steps=3, seed=1)
  again = restorer.restore(image, restoration_prompt="Deblur with sigma 2.0", steps=3, seed=1)
  other = restorer.restore(image, restoration_prompt="Deblur with sigma 2.0", steps=3, seed=2)
  assert first.shape == (50, 70, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, again)
  assert np.abs(first.astype(int) - other).mean() > 1


def test_control_scale_zero_leaves_the_unet_alone(restorer):
  """At control strength 0 the fusion layer is the identity, so neither the degraded
  image nor the restoration prompt can change the result; at 1 both do."""
  a, b = _image(50, 70, 1), _image(50, 70, 2)
  off = [restorer.restore(im, restoration_prompt=p, steps=3, control_scale=0.0)
         for im, p in ((a, "Deblur with sigma 2.0"), (b, "Denoise with sigma 0.05"))]
  np.testing.assert_array_equal(off[0], off[1])
  on = restorer.restore(b, restoration_prompt="Denoise with sigma 0.05", steps=3)
  assert np.abs(on.astype(int) - off[1]).mean() > 1


def test_upsample_prompt_takes_the_small_input(restorer):
  out = restorer.restore(_image(25, 35), restoration_prompt="Upsample to 2.0x", steps=3)
  assert out.shape == (50, 70, 3)
  kept = restorer.restore(_image(50, 70), restoration_prompt="Upsample to 2.0x", steps=3,
                          upsample=False)
  assert kept.shape == (50, 70, 3)
  assert restorer.upsample_factor("Deblur; Upsample;") == 2.5    # the range's middle
  assert restorer.upsample_factor("Remove all degradation") is None
  for bad in ("Sharpen with sigma 2", "Upsample to 0.5x"):
    with pytest.raises(PromptError):
      restorer.restore(_image(25, 35), restoration_prompt=bad, steps=3)


class _CountingControlNet:
  """The restorer's ControlNet, recording the batch of every call."""

  def __init__(self, controlnet):
    self.controlnet, self.config, self.batches = controlnet, controlnet.config, []

  def apply(self, variables, sample, *args):
    self.batches.append(sample.shape[0])
    return self.controlnet.apply(variables, sample, *args)


@pytest.mark.parametrize("restoration_cfg", [True, False])
def test_guidance_combines_the_rows(restorer, restoration_cfg):
  """ε̂ = ε(∅, c_r) + w·(ε(c_s, c_r) − ε(∅, c_r)) + (w_r − 1)·(ε(c_s, c_r) − ε(c_s, "")),
  the rows being (c_s, c_r), (∅, c_r), (c_s, "") (the last with restoration guidance).
  The ControlNet sees (z_t, t, c_r, y) only: it runs once for the first two rows."""
  call = restorer._layout((64, 64), None, None, None, cfg=True,
                          restoration_cfg=restoration_cfg)
  semantic, restoration = (e[0] for e in restorer._embeddings(call, ["a zebra"],
                                                              ["Deblur with sigma 2.0"]))
  empty = restorer._embeddings(call, [""], [""])[0][0, 0]
  np.testing.assert_array_equal(semantic[1], empty)
  np.testing.assert_array_equal(restoration[1], restoration[0])
  if restoration_cfg:
    np.testing.assert_array_equal(semantic[2], semantic[0])
    np.testing.assert_array_equal(restoration[2], empty)
  r = np.random.default_rng(0)
  x = r.standard_normal((1, 8, 8, 4)).astype(np.float32)
  y = r.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
  w, w_r, control = 3.0, 1.5, 0.7
  unet = restorer.backbone.unet.module
  counting = _CountingControlNet(restorer.controlnet)

  @jax.jit
  def both(params):
    consts = (params, 500, semantic[None], restoration[None], jnp.asarray([w, w_r, control]))
    guided = sampling._guided(unet, counting, call)(consts, x, y)
    n = call.rows
    rows = tip.predict(unet, restorer.controlnet, params["unet"], params["controlnet"],
                       jnp.repeat(x, n, 0), jnp.full((n,), 500), semantic, restoration,
                       jnp.repeat(y, n, 0), control)
    expected = rows[1] + w * (rows[0] - rows[1])
    return guided, expected + (w_r - 1) * (rows[0] - rows[2]) if restoration_cfg else expected

  guided, expected = both(restorer._params())
  # The ControlNet ran on fewer rows than the reference: XLA's float32 sums differ with the
  # batch (measured up to 5.5e-6; the ControlNet outputs themselves agree to 1e-6 relative).
  np.testing.assert_allclose(guided, expected[None], atol=2e-5)
  assert counting.batches == [1 + restoration_cfg]


def test_tiles_spread_over_devices_give_the_same_image(restorer):
  image = _image(96, 160, 3)
  kwargs = dict(restoration_prompt="Denoise with sigma 0.05", steps=2, tile=64,
                tile_overlap=16, strength=0.6)
  one = restorer.restore(image, **kwargs)
  spread = restorer.restore(image, **kwargs, devices=4)
  assert one.shape == (96, 160, 3)
  # float32 op order differs per device program: measured 1 pixel off by 1 level of 46080
  diff = np.abs(one.astype(int) - spread)
  assert diff.max() <= 1 and diff.mean() < 1e-3, (diff.max(), diff.mean())
  # Params committed to one device (as a checkpoint loads them) are spread too.
  committed = restorer.with_params(jax.device_put(restorer.controlnet_params, jax.devices()[0]))
  np.testing.assert_array_equal(committed.restore(image, **kwargs, devices=4), spread)


def test_color_fix_moves_colour_towards_the_input(rng):
  output = jnp.asarray(rng.uniform(-1, 1, (1, 96, 96, 3)), jnp.float32)
  reference = jnp.asarray(_gradient(96, 96)[None] / 127.5 - 1, jnp.float32)
  adain = colorfix.color_fix(output, reference, "adain")
  np.testing.assert_allclose(adain.mean((1, 2)), reference.mean((1, 2)), atol=1e-5)
  np.testing.assert_allclose(adain.std((1, 2)), reference.std((1, 2)), atol=1e-4)
  wavelet = colorfix.color_fix(output, reference, "wavelet")
  low = colorfix.low_frequencies
  before = jnp.abs(low(output) - low(reference)).mean()
  assert jnp.abs(low(wavelet) - low(reference)).mean() < 0.2 * before
  # Two levels take the input's finer band too (which five leave to the output).
  fine = colorfix.color_fix(output, reference, "wavelet", 2)
  band = lambda x: jnp.abs(low(x, 2) - low(reference, 2)).mean()  # noqa: E731
  assert band(fine) < 0.5 * band(wavelet), (band(fine), band(wavelet))
  with pytest.raises(ValueError, match="levels"):
    colorfix.color_fix(output, reference, "wavelet", 0)
  with pytest.raises(ValueError, match="colour fix"):
    colorfix.color_fix(output, reference, "histogram")


def _seam_ratio(out, tiles):
  """Largest mean |jump| across a tile edge over the median jump between neighbouring
  pixels, for columns and rows. With random weights the output is texture, so the bound
  is relative: a seam shows as edge jumps above the texture's own."""
  ratios = []
  for axis in (0, 1):
    jumps = np.abs(np.diff(out.astype(float), axis=axis)).mean(axis=(1 - axis, 2))
    edges = {8 * s[axis] for s in tiles.starts} | {8 * (s[axis] + tiles.size[axis])
                                                    for s in tiles.starts}
    at_edges = [jumps[e - 1] for e in edges if 0 < e < len(jumps) + 1]
    ratios.append(max(at_edges) / np.median(jumps))
  return max(ratios)


@pytest.mark.slow
def test_1536x1024_tiled_memory_and_seams(restorer):
  """Tiles of 256 px (overlap 64): XLA's peak for sampling a 1536x1024 image is bounded
  by the tile — ≈ 0.12 GB, against ≈ 39 GB for the whole image in one program (decode:
  ≈ 0.10 vs ≈ 4.9 GB). On a smooth 768x512 gradient (12 overlapping tiles; 1536x1024
  gives the same ratios: 1.13 and 1.34) the jump across tile edges stays within 1.2x
  the output's typical neighbour jump (measured 1.11); hard tiles (overlap 0) give 1.31."""
  h, w = 1024, 1536
  tiled = restorer.memory_bytes(h, w, tile=256, cfg=False)
  whole = restorer.memory_bytes(h, w, tile=0, cfg=False)
  assert tiled["sample"] < 0.25e9 and tiled["decode"] < 0.25e9, tiled
  assert whole["sample"] > 50 * tiled["sample"], (whole, tiled)

  h, w = 512, 768
  image = _gradient(h, w)
  for overlap, low, high in ((64, 0.0, 1.2), (0, 1.25, np.inf)):
    out = restorer.restore(image, steps=2, tile=256, tile_overlap=overlap)
    assert out.shape == (h, w, 3)
    tiles = restorer._layout((h, w), 256, overlap, None, cfg=False,
                             restoration_cfg=False).tiles
    assert low <= _seam_ratio(out, tiles) <= high, (overlap, _seam_ratio(out, tiles))


def test_restore_batch_equals_single_restores(restorer):
  """4 same-size images with their own prompts and seeds in one program give what 4
  single restores give, within 1 grey level (the batched convolutions may sum in
  another order; measured: see the assertion's message)."""
  images = [_image(40, 56, seed) for seed in range(4)]
  semantic = ["a zebra", "", "a red motorcycle", "a cat"]
  restoration = ["Deblur with sigma 2.0", "Remove all degradation",
                 "Denoise with sigma 0.05; Dejpeg with quality 40", "Deblur;"]
  seeds = [7, 11, 13, 17]
  batch = restorer.restore_batch(images, semantic, restoration, steps=3, seed=seeds)
  singles = np.stack([restorer.restore(im, s, r, steps=3, seed=k)
                      for im, s, r, k in zip(images, semantic, restoration, seeds)])
  assert batch.shape == (4, 40, 56, 3) and batch.dtype == np.uint8
  diff = np.abs(batch.astype(int) - singles)
  assert diff.max() <= 1, f"max {diff.max()}, {np.mean(diff > 0):.2%} of values differ"
  # An int seed s means s, s+1, ...; one prompt string applies to every image.
  np.testing.assert_array_equal(
      restorer.restore_batch(images[:2], "a zebra", "Deblur;", steps=3, seed=5),
      restorer.restore_batch(images[:2], ["a zebra"] * 2, ["Deblur;"] * 2, steps=3, seed=[5, 6]))
  with pytest.raises(ValueError, match="one size"):
    restorer.restore_batch([images[0], _image(32, 32)], steps=1)
  # Split over a 4-device batch axis (the evaluator's mesh): the same images.
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("data",))
  sharded = restorer.restore_batch(
      images, semantic, restoration, steps=3, seed=seeds,
      batch_sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  diff = np.abs(batch.astype(int) - sharded)
  assert diff.max() <= 1, f"max {diff.max()}, {np.mean(diff > 0):.2%} of values differ"


def test_prompts_reach_the_model_in_training_form_and_as_the_checkpoint_was_trained(restorer):
  """Raw and canonical wordings restore alike (same tokens); a model trained without a
  prompt kind is given "" for it, whatever the caller passes."""
  image = _image(32, 32, 5)
  raw = restorer.restore(image, "", "denoise with sigma 0.05 ; deblur with sigma 2", steps=2)
  canonical = restorer.restore(image, "", "Deblur with sigma 2.0; Denoise with sigma 0.05;",
                               steps=2)
  np.testing.assert_array_equal(raw, canonical)
  assert restorer.restoration_conditioning("Upsample to 6x; deblur with sigma 2.9") == (
      "Deblur with sigma 2.9; Upsample to 6.0x;", 6.0)
  blind = TIPRestorer(restorer.backbone, restorer.controlnet, restorer.controlnet_params,
                      resolution=restorer.resolution, uses_semantic=False,
                      uses_restoration=False)
  typed = blind.restore(image, "a zebra", "Deblur with sigma 2.0", steps=2)
  nothing = restorer.restore(image, "", "", steps=2)
  np.testing.assert_array_equal(typed, nothing)
  assert blind.restoration_conditioning("Upsample to 2.0x") == ("", 2.0)  # still resizes


def test_upsample_prompt_resizes_the_small_input_as_training_brought_it_back():
  """"Upsample to 4.0x" alone in training: area down ×4, bicubic back. The restorer,
  given that small image and the prompt, enlarges it with the same bicubic."""
  import torch
  from tip_jax.degrade import DegradeConfig, degrade, parse_restoration_prompt
  x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
  params = parse_restoration_prompt("Upsample to 4.0x;", DegradeConfig(size=(64, 64)))
  trained = np.asarray(jax.jit(degrade)(x, params))
  small = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=16,
                                          mode="area").permute(0, 2, 3, 1).numpy()
  small = np.round(small * 255) / 255   # training stores the small image on 8-bit levels
  np.testing.assert_allclose(restore_lib._resize(small, 4.0), trained, atol=1e-5)


def test_auto_prompts_are_estimated_from_the_image_which_keeps_its_size(restorer,
                                                                         monkeypatch):
  """"auto" restores as the estimated prompt typed with upsample=False: an estimated
  "Upsample to Fx" describes the input as given, so it is not resized again."""
  estimator = copy.copy(tiny_estimator())
  found = estimator.decide(np.array([-5, 4, 4, -4, -4, 0.5, 0.5, 0.5, 0.5], np.float32))
  monkeypatch.setattr(estimator, "estimate", lambda image: found)
  auto_restorer = copy.copy(restorer)
  auto_restorer.estimator = estimator
  image = _image(40, 48)
  text = auto_restorer.auto_prompt(image)
  assert text == "Deblur with sigma 0.8; Upsample to 2.0x;"
  auto = auto_restorer.restore(image, restoration_prompt=" Auto ", steps=2)
  typed = auto_restorer.restore(image, restoration_prompt=text, steps=2, upsample=False)
  assert auto.shape == image.shape
  np.testing.assert_array_equal(auto, typed)
  no_params = copy.copy(auto_restorer)
  no_params.degrade_config = dataclasses.replace(restorer.degrade_config,
                                                 tip=TIPConfig(with_values_prob=0.0))
  assert no_params.auto_prompt(image) == "Deblur; Upsample;"


def test_auto_without_an_estimator_names_the_missing_file(restorer, monkeypatch, tmp_path):
  monkeypatch.setattr(estimator_lib, "DEFAULT_PATH", str(tmp_path / "estimator"))
  fresh = copy.copy(restorer)
  fresh._estimator = None
  with pytest.raises(CheckpointError, match=rf"^{tmp_path}/estimator/config.json: no such "
                                            "file \\(the degradation estimator"):
    fresh.restore(_image(32, 32), restoration_prompt="auto", steps=1)


def test_samples_average_the_decoded_draws(restorer, monkeypatch):
  """`samples=3` decodes three draws per image (the first is the one-draw restore's) and
  returns their mean, rounded as one draw is (within a grey level: XLA may divide in
  another order)."""
  image = _image(40, 56, 3)
  decoded = []

  def recording(*args, **kwargs):
    decoded.append(sampling.decode(*args, **kwargs))
    return decoded[-1]

  monkeypatch.setattr(restore_lib, "decode", recording)
  averaged = restorer.restore(image, restoration_prompt="Deblur with sigma 2.0", steps=2,
                              seed=4, samples=3)
  assert len(decoded) == 3 and not np.allclose(decoded[0], decoded[1])
  as_uint8 = lambda x: np.round(np.clip(x + 1, 0, 2) * 127.5)  # noqa: E731 (as restore)
  unpadded = [np.asarray(d)[0, :40, :56] for d in decoded]
  diff = np.abs(averaged - as_uint8((unpadded[0] + unpadded[1] + unpadded[2]) / 3))
  assert diff.max() <= 1 and np.mean(diff > 0) < 0.01, (diff.max(), np.mean(diff > 0))
  one = restorer.restore(image, restoration_prompt="Deblur with sigma 2.0", steps=2, seed=4)
  np.testing.assert_array_equal(one, as_uint8(unpadded[0]))
  with pytest.raises(ValueError, match="samples"):
    restorer.restore(image, steps=1, samples=0)

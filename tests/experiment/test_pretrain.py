"""The pretraining losses: LDM's VAE objective term by term, the UNet's latents, target
and conditioning, and draws keyed per example (a batch's order changes nothing)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.fixtures.restore import tiny_restorer
from tip_jax.diffusion.schedules import Schedule, sd_config
from tip_jax.experiment import loss as loss_lib
from tip_jax.experiment import pretrain
from tip_jax.metrics.lpips import LPIPSNet, load_lpips
from tip_jax.models.backbone import Part
from tip_jax.models.tokenizer import tokenize

SIZE = 32
CAPTIONS = ["a red motorcycle in a garage", "", "a tabby cat", "coffee in a red cup"]


def _deterministic(backbone):
  """The backbone with its VAE's log-variance pinned at the clamp (-30): posterior
  samples are the mean to ~3e-7, so the losses can be checked in closed form."""
  params = jax.tree.map(lambda x: x, backbone.vae.params)
  bias = params["quant_conv"]["bias"]
  params["quant_conv"]["bias"] = bias.at[bias.shape[0] // 2:].set(-1e3)
  return dataclasses.replace(backbone, vae=Part(backbone.vae.module, params))


@pytest.fixture(scope="module")
def backbone():
  return _deterministic(tiny_restorer().backbone)


def _batch(tokenizer, seed: int = 0):
  rng = np.random.default_rng(seed)
  index = jnp.arange(len(CAPTIONS), dtype=jnp.int32)
  return {"clean": jnp.asarray(rng.uniform(-1, 1, (len(CAPTIONS), SIZE, SIZE, 3)), jnp.float32),
          "semantic_ids": jnp.asarray(tokenize(tokenizer, CAPTIONS)),
          "keys": loss_lib.example_keys(0, jnp.int32(5), index)}


def _permuted(batch, order):
  return jax.tree.map(lambda x: x[np.asarray(order)], batch)


def test_vae_loss_is_ldms_objective(backbone):
  """L1 of the reconstruction, the metric's LPIPS, the Gaussian KL summed per example and
  weighted per pixel element: loss = l1 + w_p * lpips + w_kl * kl / (H * W * 3)."""
  module, params = backbone.vae
  batch = _batch(backbone.tokenizer)
  clean = np.asarray(batch["clean"])
  mean, logvar = module.apply({"params": params}, batch["clean"], method="encode")
  recon = np.asarray(module.apply({"params": params}, batch["clean"]))  # decodes the mean
  kl = 0.5 * np.sum(np.square(mean) + np.exp(logvar) - 1 - logvar, axis=(1, 2, 3)).mean()
  lpips = load_lpips("alex")
  perceptual = np.mean(lpips(jnp.asarray((recon + 1) / 2), jnp.asarray((clean + 1) / 2)))

  loss, parts = pretrain.vae_loss(params, {"lpips": lpips.params}, batch, vae=module,
                                  lpips=LPIPSNet("alex", precision=None), lpips_weight=0.5,
                                  kl_weight=1e-3)
  np.testing.assert_allclose(parts["l1"], np.mean(np.abs(recon - clean)), rtol=1e-5)
  np.testing.assert_allclose(parts["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(parts["lpips"], perceptual, rtol=1e-4)
  np.testing.assert_allclose(loss, parts["l1"] + 0.5 * perceptual + 1e-3 * kl / (SIZE * SIZE * 3),
                             rtol=1e-5)
  plain, plain_parts = pretrain.vae_loss(params, {}, batch, vae=module, lpips=None,
                                         lpips_weight=0.0, kl_weight=0.0)
  assert "lpips" not in plain_parts
  np.testing.assert_allclose(plain, parts["l1"], rtol=1e-6)


def test_vae_loss_samples_the_posterior_per_example():
  """With the real (unpinned) log-variance the decoded latent is a sample keyed by the
  example, not its position: permuting the batch permutes nothing but the order."""
  module, params = tiny_restorer().backbone.vae
  batch = _batch(tiny_restorer().backbone.tokenizer)
  kwargs = dict(vae=module, lpips=None, lpips_weight=0.0, kl_weight=1e-6)
  loss, _ = pretrain.vae_loss(params, {}, batch, **kwargs)
  again, _ = pretrain.vae_loss(params, {}, _permuted(batch, [2, 0, 3, 1]), **kwargs)
  np.testing.assert_allclose(loss, again, rtol=1e-6)
  mean_only, _ = pretrain.vae_loss(_deterministic(tiny_restorer().backbone).vae.params, {},
                                   batch, **kwargs)
  assert abs(float(loss) - float(mean_only)) > 1e-4


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_noised_latents_scale_the_posterior_and_give_the_target(backbone, prediction):
  """z0 = (mean - shift) * scale, recovered from (z_t, target) with the schedule's ᾱ_t."""
  vae = backbone.vae.module
  shifted = dataclasses.replace(vae.config, scaling_factor=0.5, shift_factor=0.1)
  bb = dataclasses.replace(backbone, vae=Part(vae.clone(config=shifted), backbone.vae.params))
  bb = bb.with_prediction_type(prediction)
  schedule = Schedule.from_config(sd_config(prediction))
  batch = _batch(bb.tokenizer)
  z_t, t, target = loss_lib.noised_latents(bb, bb.vae.params, batch["clean"], batch["keys"],
                                           schedule)
  mean, _ = bb.vae.module.apply({"params": bb.vae.params}, batch["clean"], method="encode")
  ab = np.asarray(schedule.alphas_cumprod)[np.asarray(t)][:, None, None, None]
  a, s = np.sqrt(ab), np.sqrt(1 - ab)
  if prediction == "epsilon":
    z0 = (np.asarray(z_t) - s * np.asarray(target)) / a
  else:
    z0 = a * np.asarray(z_t) - s * np.asarray(target)
  np.testing.assert_allclose(z0, (np.asarray(mean) - 0.1) * 0.5, atol=2e-4)


def test_unet_loss_reads_the_caption_states_and_the_latents(backbone, monkeypatch):
  """The UNet is given z_t, t and the frozen text encoder's states of each caption
  ("" included), and regresses `noised_latents`' target; per-example keys make the
  loss independent of the batch order."""
  unet, text = backbone.unet, backbone.text_encoder
  frozen = {"vae": backbone.vae.params, "text_encoder": text.params}
  schedule = Schedule.from_config(sd_config())
  batch = _batch(backbone.tokenizer)
  seen = {}
  noised = loss_lib.noised_latents

  def spy(*args):
    seen["z_t"], seen["t"], seen["target"] = out = noised(*args)
    return out

  monkeypatch.setattr(pretrain, "noised_latents", spy)
  loss, parts = pretrain.unet_loss(unet.params, frozen, batch, backbone=backbone,
                                   schedule=schedule)
  states = text.module.apply({"params": text.params}, batch["semantic_ids"])
  pred = unet.module.apply({"params": unet.params}, seen["z_t"], seen["t"], states)
  np.testing.assert_allclose(loss, np.mean(np.square(np.asarray(pred) - seen["target"])),
                             rtol=1e-5)
  assert parts == {}
  again, _ = pretrain.unet_loss(unet.params, frozen, _permuted(batch, [3, 2, 1, 0]),
                                backbone=backbone, schedule=schedule)
  np.testing.assert_allclose(loss, again, rtol=1e-5)


def test_device_batch_keeps_the_caption_ids_and_keys_each_example(backbone):
  tokenizer = backbone.tokenizer
  host = {"image": np.full((2, SIZE, SIZE, 3), 255, np.uint8),
          "semantic_ids": tokenize(tokenizer, CAPTIONS[:2]),
          "index": np.array([7, 3], np.int32)}
  out = pretrain.device_batch(host, jnp.int32(4), seed=1)
  np.testing.assert_array_equal(out["clean"], np.ones((2, SIZE, SIZE, 3)))
  np.testing.assert_array_equal(out["semantic_ids"], host["semantic_ids"])
  keys = loss_lib.example_keys(1, jnp.int32(4), jnp.asarray([7, 3]))
  np.testing.assert_array_equal(jax.random.key_data(out["keys"]), jax.random.key_data(keys))

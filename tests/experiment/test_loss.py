"""The loss routes each input where the paper says: c_s → frozen UNet, c_r and y →
ControlNet; prompt kinds a config turns off are ""; `mix="step"` makes whole batches
Real-ESRGAN with the blind prompt."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.fixtures.restore import tiny_restorer
from tip_jax.degrade import DegradeConfig, params_to_tree, sample_params
from tip_jax.degrade.pipeline import REALESRGAN, TIP, mix_per_step
from tip_jax.diffusion.schedules import Schedule, sd_config
from tip_jax.experiment import loss as loss_lib
from tip_jax.experiment import sharding
from tip_jax.experiment.components import Components
from tip_jax.models.tokenizer import tokenize

SIZE = 32


def _models():
  r = tiny_restorer()
  return Components(backbone=r.backbone, controlnet=r.controlnet), r.controlnet_params


def _batch(tokenizer, rng):
  return {"clean": jnp.asarray(rng.uniform(-1, 1, (2, SIZE, SIZE, 3)), jnp.float32),
          "degraded": jnp.asarray(rng.uniform(-1, 1, (2, SIZE, SIZE, 3)), jnp.float32),
          "semantic_ids": jnp.asarray(tokenize(tokenizer, ["a zebra", "a red car"])),
          "restoration_ids": jnp.asarray(tokenize(tokenizer, ["Deblur with sigma 2.0;",
                                                              "Denoise with sigma 0.05;"])),
          "keys": jax.random.split(jax.random.key(0), 2)}


def test_each_prompt_and_the_degraded_image_reach_their_model(monkeypatch, rng):
  models, params = _models()
  backbone = models.backbone
  batch = _batch(backbone.tokenizer, rng)
  seen = {}
  predict = loss_lib.tip.predict

  def spy(unet, controlnet, unet_params, cn_params, z_t, t, semantic, restoration, degraded):
    seen.update(semantic=semantic, restoration=restoration, degraded=degraded)
    return predict(unet, controlnet, unet_params, cn_params, z_t, t, semantic, restoration,
                   degraded)

  monkeypatch.setattr(loss_lib.tip, "predict", spy)
  text = lambda ids: backbone.text_encoder.module.apply(  # noqa: E731
      {"params": backbone.text_encoder.params}, ids)
  for semantic_on, restoration_on in ((True, True), (False, False)):
    use = ml_collections.ConfigDict({"semantic": semantic_on, "restoration": restoration_on})
    loss = loss_lib.loss_fn(params, backbone.params, batch, models=models,
                            schedule=Schedule.from_config(sd_config()), prompts=use)
    assert np.isfinite(float(loss))
    empty = text(jnp.asarray(tokenize(backbone.tokenizer, ["", ""])))
    np.testing.assert_allclose(seen["semantic"], text(batch["semantic_ids"]) if semantic_on
                               else empty, atol=1e-6)
    np.testing.assert_allclose(seen["restoration"], text(batch["restoration_ids"])
                               if restoration_on else empty, atol=1e-6)
    np.testing.assert_array_equal(seen["degraded"], batch["degraded"])
  assert not np.allclose(text(batch["semantic_ids"]), text(batch["restoration_ids"]))


def test_mix_per_step_draws_one_pipeline_per_batch():
  config = DegradeConfig(size=(SIZE, SIZE), mix="step", realesrgan_prob=0.5)
  params, prompts = sample_params(0, 4, config)
  assert list(np.asarray(params.pipeline)) == [TIP] * 4 and "Remove all degradation" not in prompts
  blind = []
  for step in range(200):
    mixed, is_blind = mix_per_step(params, jax.random.key(step))
    assert set(np.asarray(mixed.pipeline).tolist()) == {REALESRGAN if is_blind else TIP}
    blind.append(bool(is_blind))
  assert 0.4 < np.mean(blind) < 0.6
  per_example = DegradeConfig(size=(SIZE, SIZE), realesrgan_prob=0.5)
  drawn, _ = sample_params(0, 64, per_example)
  assert set(np.asarray(drawn.pipeline).tolist()) == {TIP, REALESRGAN}
  assert mix_per_step(drawn, jax.random.key(0))[0] is drawn


def test_device_batch_swaps_in_the_blind_prompt_at_real_esrgan_steps(rng):
  models, _ = _models()
  tokenizer = models.backbone.tokenizer
  config = DegradeConfig(size=(SIZE, SIZE), mix="step", realesrgan_prob=0.5)
  params, prompts = sample_params(0, 2, config)
  host = {"image": rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8),
          "semantic_ids": tokenize(tokenizer, ["", ""]),
          "restoration_ids": tokenize(tokenizer, prompts),
          "degrade": params_to_tree(jax.tree.map(lambda x: np.asarray(x)[None], params)),
          "index": np.arange(2, dtype=np.int32)}
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  blind_ids = loss_lib.blind_prompt_ids(models)
  make = jax.jit(lambda b, step: loss_lib.device_batch(
      b, step, seed=0, degrade_config=config, mesh=mesh, batch_axes=("data",),
      blind_ids=blind_ids))
  kinds = set()
  for step in range(8):
    out = make(host, step)
    blind = bool(np.all(np.asarray(out["restoration_ids"]) == np.asarray(blind_ids)))
    if not blind:
      np.testing.assert_array_equal(out["restoration_ids"], host["restoration_ids"])
    kinds.add(blind)
  assert kinds == {True, False}


def test_timestep_draws_uniform_as_before_and_cubic_towards_noise():
  keys = jax.random.split(jax.random.key(3), 20_000)
  uniform = jax.vmap(lambda k: loss_lib.draw_timestep(k, 1000, "uniform"))(keys)
  np.testing.assert_array_equal(  # uniform is the draw every earlier run made
      uniform, jax.vmap(lambda k: jax.random.randint(k, (), 0, 1000))(keys))
  cubic = np.asarray(jax.vmap(lambda k: loss_lib.draw_timestep(k, 1000, "cubic"))(keys))
  assert cubic.dtype == np.int32 and cubic.min() >= 0 and cubic.max() <= 999
  # P(t >= T/2) = P(u³ <= 1/2) = 0.794; E[t] = (1 - 1/4)·T.
  assert abs(np.mean(cubic >= 500) - 0.5 ** (1 / 3)) < 0.01, np.mean(cubic >= 500)
  assert abs(cubic.mean() - 749.5) < 5, cubic.mean()
  with pytest.raises(ValueError, match="timestep sampling 'square'"):
    loss_lib.draw_timestep(keys[0], 1000, "square")


def test_truncated_snr_weights_give_the_larger_of_the_eps_and_x0_errors():
  schedule = Schedule.sd()
  t = jnp.asarray([0, 120, 354, 600, 999])
  a = schedule.alphas_cumprod[t][:, None]
  keys = jax.random.split(jax.random.key(0), 3)
  z0, noise, guess = (jax.random.normal(k, (5, 16)) for k in keys)
  z_t = jnp.sqrt(a) * z0 + jnp.sqrt(1 - a) * noise
  mse = lambda x, y: jnp.mean(jnp.square(x - y), axis=1)  # noqa: E731
  # An ε-model's guess, and the clean latent it implies.
  x0_hat = (z_t - jnp.sqrt(1 - a) * guess) / jnp.sqrt(a)
  want = jnp.maximum(mse(guess, noise), mse(x0_hat, z0))
  w = loss_lib.loss_weights(schedule, t, "epsilon", "truncated_snr")
  np.testing.assert_allclose(w * mse(guess, noise), want, rtol=1e-4)
  # A v-model's guess: the same max, in v's units.
  v = jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * z0
  x0_hat = jnp.sqrt(a) * z_t - jnp.sqrt(1 - a) * guess
  eps_hat = jnp.sqrt(1 - a) * z_t + jnp.sqrt(a) * guess
  want = jnp.maximum(mse(eps_hat, noise), mse(x0_hat, z0))
  w = loss_lib.loss_weights(schedule, t, "v_prediction", "truncated_snr")
  np.testing.assert_allclose(w * mse(guess, v), want, rtol=1e-4)
  np.testing.assert_array_equal(loss_lib.loss_weights(schedule, t, "epsilon", "none"), 1.0)
  with pytest.raises(ValueError, match="not 'sample'"):
    loss_lib.loss_weights(schedule, t, "sample", "truncated_snr")

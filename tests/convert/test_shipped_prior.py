"""The prior shipped in the package (`model.backbone=embedded`): small, loads as the
`mini` geometry, and diffusers / transformers read it as our models."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from tip_jax.convert.diffusers import load_backbone
from tip_jax.experiment.components import EMBEDDED, backbone_folder
from tip_jax.models.backbone import geometry
from tip_jax.models.tokenizer import tokenize

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

FOLDER = backbone_folder(EMBEDDED)


@pytest.fixture(scope="module")
def prior():
  return load_backbone(FOLDER)


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def test_it_is_small_and_has_the_mini_geometry(prior):
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(FOLDER) for f in fs)
  assert size < 20 * 2**20, size
  unet, vae, text = geometry("mini").configs()
  # configs/prior.py:unet trains it as a v-prediction model (README says why)
  assert prior.prediction_type == "v_prediction"
  assert prior.unet.module.config == dataclasses.replace(unet, prediction_type="v_prediction")
  assert prior.text_encoder.module.config == text
  assert prior.vae.module.config.block_out_channels == vae.block_out_channels
  assert prior.vae.module.config.downsample_factor == 4
  assert 0.1 < prior.scaling_factor < 10  # measured on the training crops, not SD's


def test_diffusers_reads_the_unet_and_vae_as_ours(prior, rng):
  unet_ref = diffusers.UNet2DConditionModel.from_pretrained(
      FOLDER, subfolder="unet", torch_dtype=torch.float32).eval()
  vae_ref = diffusers.AutoencoderKL.from_pretrained(
      FOLDER, subfolder="vae", torch_dtype=torch.float32).eval()
  image = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  sample = rng.standard_normal((2, 16, 16, 4)).astype(np.float32)
  t = np.array([10, 900])
  text = rng.standard_normal((2, 77, 32)).astype(np.float32)
  module, params = prior.unet
  ours = np.asarray(jax.jit(module.apply)({"params": params}, sample, t, text))
  vae, vae_params = prior.vae
  mean, _ = jax.jit(lambda p, x: vae.apply({"params": p}, x, method="encode"))(vae_params, image)
  decoded = jax.jit(lambda p, z: vae.apply({"params": p}, z, method="decode"))(vae_params,
                                                                                sample)
  with torch.no_grad():
    theirs = _nhwc(unet_ref(_nchw(sample), torch.from_numpy(t), torch.from_numpy(text)).sample)
    ref_mean = _nhwc(vae_ref.encode(_nchw(image)).latent_dist.mean)
    ref_decoded = _nhwc(vae_ref.decode(_nchw(sample)).sample)
  for a, b in ((ours, theirs), (mean, ref_mean), (decoded, ref_decoded)):
    assert np.abs(np.asarray(a) - b).max() <= 1e-4


def test_transformers_reads_the_text_encoder_as_ours(prior):
  ref = transformers.CLIPTextModel.from_pretrained(os.path.join(FOLDER, "text_encoder"),
                                                   torch_dtype=torch.float32).eval()
  ids = tokenize(prior.tokenizer, ["a cup of espresso", "Denoise with sigma 0.06;"])
  module, params = prior.text_encoder
  ours = np.asarray(jax.jit(module.apply)({"params": params}, ids))
  with torch.no_grad():
    theirs = ref(input_ids=torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
  assert np.abs(ours - theirs).max() <= 1e-4

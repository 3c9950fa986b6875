"""`save_backbone` writes a folder diffusers and transformers read as our models: their
own `from_pretrained` gives our outputs, and `load_backbone` gives our params back."""

import json

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from safetensors.numpy import load_file

from tests.fixtures.restore import tiny_restorer
from tip_jax.convert.diffusers import load_backbone, save_backbone, to_state_dict
from tip_jax.models.tokenizer import tokenize

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny v-prediction backbone, every param random (biases and norms included), saved."""
  backbone = tiny_restorer("v_prediction").backbone.with_prediction_type("v_prediction")
  folder = tmp_path_factory.mktemp("backbone")
  save_backbone(backbone, str(folder))
  return backbone, folder


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def test_load_backbone_reads_back_every_param_exactly(exported):
  backbone, folder = exported
  loaded = load_backbone(str(folder))
  for name in ("unet", "vae", "text_encoder"):
    ours, back = flatten_dict(backbone.params[name]), flatten_dict(loaded.params[name])
    assert ours.keys() == back.keys()
    assert all(np.array_equal(ours[k], back[k]) for k in ours), name
  assert loaded.prediction_type == "v_prediction"
  assert loaded.scaling_factor == backbone.scaling_factor
  assert loaded.unet.module.config == backbone.unet.module.config
  assert loaded.vae.module.config == backbone.vae.module.config
  assert loaded.text_encoder.module.config == backbone.text_encoder.module.config
  texts = ["a red motorcycle", "Deblur with sigma 2.0;", ""]
  np.testing.assert_array_equal(tokenize(loaded.tokenizer, texts),
                                tokenize(backbone.tokenizer, texts))


def test_diffusers_unet_matches(exported, rng):
  backbone, folder = exported
  ref = diffusers.UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
  # Exactly the keys diffusers' own model has: nothing missing, nothing unexpected.
  assert set(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")) == set(
      ref.state_dict())
  sample = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  t = np.array([10, 900])
  text = rng.standard_normal((2, 77, 32)).astype(np.float32)
  module, params = backbone.unet
  ours = np.asarray(jax.jit(module.apply)({"params": params}, sample, t, text))
  with torch.no_grad():
    theirs = _nhwc(ref(_nchw(sample), torch.from_numpy(t), torch.from_numpy(text)).sample)
  # Measured max abs diff: 2.3e-6 on outputs up to 2.7.
  assert np.abs(ours - theirs).max() <= 1e-4


def test_diffusers_vae_matches(exported, rng):
  backbone, folder = exported
  ref = diffusers.AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
  assert set(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors")) == set(
      ref.state_dict())
  assert ref.config.scaling_factor == backbone.scaling_factor
  module, params = backbone.vae
  image = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  latent = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
  mean, logvar = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode"))(
      params, image)
  decoded = jax.jit(lambda p, z: module.apply({"params": p}, z, method="decode"))(params, latent)
  with torch.no_grad():
    dist = ref.encode(_nchw(image)).latent_dist
    ref_decoded = ref.decode(_nchw(latent)).sample
  # Measured max abs diffs: 2.5e-6, 1.9e-6, 4.1e-6 on outputs up to 1.2, 1.5, 3.5.
  for ours, theirs in ((mean, dist.mean), (logvar, dist.logvar), (decoded, ref_decoded)):
    assert np.abs(np.asarray(ours) - _nhwc(theirs)).max() <= 1e-4


def test_transformers_text_encoder_matches(exported):
  backbone, folder = exported
  ref = transformers.CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
  assert set(load_file(folder / "text_encoder" / "model.safetensors")) == set(ref.state_dict())
  ids = tokenize(backbone.tokenizer, ["a cup of espresso on a red saucer", ""])
  module, params = backbone.text_encoder
  ours = np.asarray(jax.jit(module.apply)({"params": params}, ids))
  with torch.no_grad():
    theirs = ref(input_ids=torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
  # Measured max abs diff: 1.3e-6 on outputs up to 3.4.
  assert np.abs(ours - theirs).max() <= 1e-4
  tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")
  np.testing.assert_array_equal(
      tokenizer(["a cup of espresso"], padding="max_length", max_length=77,
                return_tensors="np")["input_ids"],
      tokenize(backbone.tokenizer, ["a cup of espresso"]))


def test_the_folder_is_a_stable_diffusion_pipeline(exported):
  _, folder = exported
  pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder)
  assert isinstance(pipe.scheduler, diffusers.DDIMScheduler)
  assert pipe.scheduler.config.prediction_type == "v_prediction"
  assert json.loads((folder / "model_index.json").read_text())["unet"] == [
      "diffusers", "UNet2DConditionModel"]


def test_a_name_that_does_not_read_back_is_refused():
  """Legacy VAE attention names are renamed on load (query -> to_q): a tree using one
  would be written under a key that loads elsewhere, so it is refused."""
  tree = {"mid_block": {"attentions_0": {"query": {"kernel": np.zeros((8, 8), np.float32)}}}}
  with pytest.raises(ValueError, match="mid_block/attentions_0/query/kernel has no torch name"):
    to_state_dict(tree, "vae")
  state = to_state_dict({"mid_block": {"attentions_0": {"to_q": tree["mid_block"]["attentions_0"]
                                                        ["query"]}}}, "vae")
  assert list(state) == ["mid_block.attentions.0.to_q.weight"]


def test_float16_export_halves_the_files_and_reads_back_rounded(exported, tmp_path):
  backbone, folder = exported
  save_backbone(backbone, str(tmp_path), dtype="float16")
  loaded = load_backbone(str(tmp_path))
  for name, weights in (("unet", "unet/diffusion_pytorch_model"),
                        ("vae", "vae/diffusion_pytorch_model"),
                        ("text_encoder", "text_encoder/model")):
    half, full = (p / f"{weights}.safetensors" for p in (tmp_path, folder))
    assert abs(half.stat().st_size / full.stat().st_size - 0.5) < 0.01, name
    ours, back = flatten_dict(backbone.params[name]), flatten_dict(loaded.params[name])
    assert all(back[k].dtype == np.float32 and np.array_equal(
        np.asarray(ours[k]).astype(np.float16).astype(np.float32), back[k]) for k in ours), name

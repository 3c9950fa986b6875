"""CLIP vision tower and the two-tower CLIPModel: parity with transformers, geometry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from tip_jax.convert import diffusers as convert
from tip_jax.models import params as params_lib
from tip_jax.models import tokenizer as tok_lib
from tip_jax.models.clip import CLIPConfig, CLIPModel
from tip_jax.models.clip_text import CLIPTextConfig
from tip_jax.models.clip_vision import CLIPVisionConfig, CLIPVisionModel

torch = pytest.importorskip("torch")
from tests.fixtures import clip as clip_fixture  # noqa: E402  (imports torch)

CAPTIONS = ["a photo of a cat", "two dogs running along the beach at sunset, film grain"]


@pytest.fixture(scope="module", params=[49407, 2], ids=["eos", "legacy_eos2"])
def pair(request):
  """(torch CLIPModel, our module, converted params). eos_token_id 2 is the value older
  configs carry (openai/clip-vit-large-patch14's included): the pooler then takes argmax(ids)."""
  model = clip_fixture.torch_clip(eos_token_id=request.param)
  module = CLIPModel(CLIPConfig.from_transformers(model.config.to_dict()))
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  return model, module, convert.convert_state_dict(state, module, "clip")


def _features(output) -> np.ndarray:
  """transformers 5 returns a BaseModelOutputWithPooling (projection in pooler_output),
  transformers 4 a tensor."""
  return getattr(output, "pooler_output", output).detach().numpy()


def test_image_features_parity(pair):
  model, module, params = pair
  pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
  with torch.no_grad():
    expected = _features(model.get_image_features(pixel_values=torch.from_numpy(pixels)))
    pooled = model.vision_model(pixel_values=torch.from_numpy(pixels)).pooler_output.numpy()
  nhwc = jnp.asarray(pixels.transpose(0, 2, 3, 1))
  got = jax.jit(lambda p, x: module.apply({"params": p}, x, method=CLIPModel.get_image_features))(
      params, nhwc)
  assert got.shape == (2, clip_fixture.PROJECTION_DIM)
  # Measured: 1.4e-6 (features reach |4.2|).
  assert np.abs(np.asarray(got) - expected).max() <= 1e-4
  tower = CLIPVisionModel(module.config.vision)
  got_pooled = jax.jit(tower.apply)({"params": params["vision_model"]}, nhwc)
  # Measured: 9.5e-7.
  assert np.abs(np.asarray(got_pooled) - pooled).max() <= 1e-4


def test_text_features_parity(pair):
  model, module, params = pair
  ids = tok_lib.tokenize(tok_lib.bundled_tokenizer(), CAPTIONS)
  assert (ids[0, 7:] == 49407).all()  # EOT padding: the pooler must pick the first EOT
  with torch.no_grad():
    expected = _features(model.get_text_features(input_ids=torch.from_numpy(ids).long()))
  got = jax.jit(lambda p, x: module.apply({"params": p}, x, method=CLIPModel.get_text_features))(
      params, jnp.asarray(ids))
  # Measured: 7.7e-7 (features reach |3.2|).
  assert np.abs(np.asarray(got) - expected).max() <= 1e-4


def test_text_pooling_ignores_padding_token(pair):
  """SD 2.x-style "!" padding (id 0) leaves the pooled feature unchanged under either rule."""
  _, module, params = pair
  ids = tok_lib.tokenize(tok_lib.bundled_tokenizer(), CAPTIONS)
  zero_pad = np.where(np.cumsum(ids == 49407, axis=1) > 1, 0, ids)
  fn = jax.jit(lambda x: module.apply({"params": params}, x, method=CLIPModel.get_text_features))
  np.testing.assert_allclose(fn(jnp.asarray(zero_pad)), fn(jnp.asarray(ids)), atol=1e-6)


def test_default_is_vit_l14():
  """The default config is openai/clip-vit-large-patch14 (d = 768, as the paper's CLIP)."""
  tf = clip_fixture.transformers()
  ref_config = tf.CLIPConfig(
      text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
      vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                         num_attention_heads=16, patch_size=14),
      projection_dim=768)
  assert CLIPConfig.from_transformers(ref_config.to_dict()) == CLIPConfig()
  with torch.device("meta"):  # shapes only, nothing allocated
    ref = tf.CLIPModel(ref_config)
  ours = params_lib.count_params(params_lib.abstract_params(CLIPModel()))
  # ViT-L/14 has 427,616,513 params; logit_scale is not built (raw cosines never read it).
  assert ours + 1 == sum(p.numel() for p in ref.parameters()) == 427_616_513


def test_config_missing_keys_take_transformers_defaults():
  """Config files that leave out default values must read as transformers reads them."""
  config = CLIPConfig.from_transformers({"text_config": {}, "vision_config": {}})
  assert config.text == CLIPTextConfig(hidden_size=512, intermediate_size=2048,
                                       num_attention_heads=8)
  assert config.vision == CLIPVisionConfig()  # transformers' vision defaults: ViT-B/32
  assert (config.projection_dim, config.eos_token_id) == (512, 49407)
  older = CLIPConfig.from_transformers({"text_config": {"hidden_size": 64},
                                        "text_config_dict": {"hidden_size": 768}})
  assert older.text.hidden_size == 768  # transformers reads `*_config_dict` first
  with pytest.raises(ValueError, match="image_size 224 is not a multiple of patch_size 15"):
    CLIPVisionConfig(image_size=224, patch_size=15)


def test_logical_axes():
  specs = flatten_dict(params_lib.logical_axes(CLIPModel(CLIPConfig(
      text=CLIPTextConfig(**clip_fixture.TEXT),
      vision=CLIPVisionConfig(**clip_fixture.VISION), projection_dim=16))))
  assert tuple(specs["vision_model", "embeddings", "class_embedding"]) == ("embed",)
  assert tuple(specs["vision_model", "embeddings", "patch_embedding", "kernel"]) == (
      None, None, "conv_in", "conv_out")
  assert tuple(specs["vision_model", "embeddings", "position_embedding", "embedding"]) == (
      "pos", "embed")
  assert tuple(specs["visual_projection", "kernel"]) == ("embed", "mlp")
  assert ("vision_model", "embeddings", "patch_embedding", "bias") not in specs


def test_wrong_image_size_is_refused():
  tower = CLIPVisionModel(CLIPVisionConfig(**clip_fixture.VISION))
  with pytest.raises(ValueError, match=r"takes \(224, 224, 3\)"):
    jax.eval_shape(tower.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)))

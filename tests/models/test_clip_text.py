"""CLIP text encoder: parity with transformers, checkpoint loading, tokenization, sizes."""

import copy
import dataclasses
import hashlib
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tip_jax.convert import diffusers as convert
from tip_jax.models import params as params_lib
from tip_jax.models import tokenizer as tok_lib
from tip_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
from tip_jax.models.layers import ModelOptions

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BPE = tok_lib.bundled_bpe_path()  # CLIP's real BPE table, shipped in third_party/
# sha256 of CLIP's bpe_simple_vocab_16e6.txt.gz as OpenAI and open-clip distribute it.
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
TINY = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77)
TOKEN_IDS = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)  # inside the tiny vocab


def _torch_model(hidden_act: str, seed: int):
  """A tiny transformers CLIPTextModel with every param randomised (not just the init's
  zeros and ones), so biases and LN affine terms take part in the comparison."""
  torch.manual_seed(seed)
  config = transformers.CLIPTextConfig(hidden_act=hidden_act, **TINY, **TOKEN_IDS)
  model = transformers.CLIPTextModel(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      base = 1.0 if "layer_norm" in name and name.endswith("weight") else 0.0
      p.copy_(base + 0.2 * torch.randn_like(p))
  return model.eval()


@pytest.fixture(scope="module", params=["quick_gelu", "gelu"], ids=["sd1", "sd2"])
def saved(request, tmp_path_factory):
  """(torch model, checkpoint root with text_encoder/, fp16 checkpoint root, ids)."""
  model = _torch_model(request.param, seed=0)
  root = tmp_path_factory.mktemp(f"ckpt_{request.param}")
  model.save_pretrained(root / "text_encoder", safe_serialization=True)
  half_root = tmp_path_factory.mktemp(f"ckpt16_{request.param}")
  copy.deepcopy(model).half().save_pretrained(half_root / "text_encoder", variant="fp16")
  ids = np.random.default_rng(1).integers(0, TINY["vocab_size"], (2, 77)).astype(np.int64)
  with torch.no_grad():
    expected = model(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
  return model, root, half_root, ids, expected


def _run(module: nn.Module, params, ids: np.ndarray) -> np.ndarray:
  return np.asarray(jax.jit(module.apply)({"params": params}, jnp.asarray(ids, jnp.int32)))


def test_parity_fp32(saved):
  torch_model, root, _, ids, expected = saved
  module, params = convert.load_component(str(root), "text_encoder")
  assert module.config.hidden_act == torch_model.config.hidden_act
  got = _run(module, params, ids)
  assert got.shape == (2, 77, 32)
  # Measured: 2.5e-6 (sd1, quick_gelu) and 2.1e-6 (sd2, gelu); outputs reach |3.1|.
  assert np.abs(got - expected).max() <= 1e-4


def test_fp16_variant_loads(saved):
  _, _, half_root, ids, expected = saved
  assert os.listdir(half_root / "text_encoder").count("model.fp16.safetensors") == 1
  module, params = convert.load_component(str(half_root), "text_encoder")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  # fp16 weight rounding only (compute stays fp32). Measured: 4.4e-3 (sd1 and sd2).
  assert np.abs(_run(module, params, ids) - expected).max() <= 1e-2


def test_legacy_prefixed_keys(saved):
  """transformers 4 (and the published SD folders) save `text_model.`-prefixed keys plus a
  `position_ids` buffer; transformers 5 saves neither. Both must convert identically."""
  from safetensors.numpy import load_file
  _, root, _, _, _ = saved
  module, params = convert.load_component(str(root), "text_encoder")
  state = load_file(str(root / "text_encoder" / "model.safetensors"))
  legacy = {f"text_model.{k}": v for k, v in state.items()}
  legacy["text_model.embeddings.position_ids"] = np.arange(77)[None]
  converted = convert.convert_state_dict(legacy, module, "text_encoder")
  jax.tree.map(np.testing.assert_array_equal, converted, params)


def test_remat_matches(saved):
  _, root, _, ids, _ = saved
  module, params = convert.load_component(str(root), "text_encoder")
  remat = CLIPTextModel(module.config, ModelOptions(remat_policy="nothing_saveable"))
  np.testing.assert_allclose(_run(remat, params, ids), _run(module, params, ids), atol=1e-5)


def test_logical_axes():
  specs = params_lib.logical_axes(CLIPTextModel(CLIPTextConfig(**TINY)))
  layer = specs["encoder"]["layers_1"]
  assert tuple(specs["embeddings"]["token_embedding"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["embeddings"]["position_embedding"]["embedding"]) == ("pos", "embed")
  for name in ("q_proj", "k_proj", "v_proj"):
    assert tuple(layer["self_attn"][name]["kernel"]) == ("embed", "heads")
  assert tuple(layer["self_attn"]["out_proj"]["kernel"]) == ("heads", "embed")
  assert tuple(layer["mlp"]["fc1"]["kernel"]) == ("embed", "mlp")
  assert tuple(layer["mlp"]["fc2"]["kernel"]) == ("mlp", "embed")
  assert tuple(specs["final_layer_norm"]["scale"]) == ("norm",)


def test_config_from_transformers():
  sd15_json = dict(architectures=["CLIPTextModel"], model_type="clip_text_model",
                   hidden_act="quick_gelu", hidden_size=768, intermediate_size=3072,
                   num_attention_heads=12, num_hidden_layers=12, projection_dim=768,
                   vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5,
                   torch_dtype="float32", bos_token_id=0, eos_token_id=2, pad_token_id=1)
  assert CLIPTextConfig.from_transformers(sd15_json) == CLIPTextConfig.sd15()
  sd21_json = dict(sd15_json, hidden_act="gelu", hidden_size=1024, intermediate_size=4096,
                   num_attention_heads=16, num_hidden_layers=23, projection_dim=512)
  assert CLIPTextConfig.from_transformers(sd21_json) == CLIPTextConfig.sd21()
  with pytest.raises(ValueError, match="unsupported CLIP hidden_act 'relu'"):
    CLIPTextConfig.from_transformers(dict(sd15_json, hidden_act="relu"))


def test_param_counts():
  sd15 = params_lib.count_params(params_lib.abstract_params(CLIPTextModel(CLIPTextConfig.sd15())))
  assert sd15 == 123_060_480  # diffusers' SD1.5 text_encoder
  cfg = CLIPTextConfig.sd21()
  sd21 = params_lib.count_params(params_lib.abstract_params(CLIPTextModel(cfg)))
  print(f"sd21 text encoder params: {sd21:,}")
  with torch.device("meta"):  # shapes only, nothing allocated
    ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        **dataclasses.asdict(cfg), projection_dim=512))
  assert sd21 == sum(p.numel() for p in ref.parameters()) == 340_387_840


# --- tokenization against CLIP's real BPE table -------------------------------------------------

@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
  root = tmp_path_factory.mktemp("tok")
  sd1 = tok_lib.write_tokenizer_folder(BPE, str(root / "sd1"))
  sd2 = tok_lib.write_tokenizer_folder(BPE, str(root / "sd2"), pad_token="!")
  return tok_lib.load_tokenizer(sd1), tok_lib.load_tokenizer(sd2)


@pytest.mark.parametrize("which,pad", [(0, 49407), (1, 0)], ids=["sd1", "sd2"])
def test_tokenize_cat(tokenizers, which, pad):
  tok = tokenizers[which]
  assert len(tok) == 49408
  ids = tok_lib.tokenize(tok, ["a photo of a cat"])
  assert ids.dtype == np.int32 and ids.shape == (1, 77)
  assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
  assert (ids[0, 7:] == pad).all()


def test_tokenize_truncates(tokenizers):
  ids = tok_lib.tokenize(tokenizers[0], ["a photo of a cat " * 40, "short"])
  assert ids.shape == (2, 77)
  assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and (ids[0, 1:-1] != 49407).all()


def test_decode_round_trip(tokenizers):
  tok = tokenizers[1]
  text = "Deblur with sigma 3.0"
  ids = tok_lib.tokenize(tok, [text])[0]
  decoded = tok.decode(ids, skip_special_tokens=True)
  # CLIP lowercases and treats every digit and punctuation run as its own word, so the
  # text comes back as "deblur with sigma 3 . 0"; it re-encodes to the same ids.
  assert decoded.replace(" ", "") == text.lower().replace(" ", "")
  np.testing.assert_array_equal(tok_lib.tokenize(tok, [decoded])[0], ids)


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(convert.CheckpointError, match="no such tokenizer folder"):
    tok_lib.load_tokenizer(str(tmp_path / "absent"))
  (tmp_path / "vocab.json").write_text("{}")
  with pytest.raises(convert.CheckpointError, match="missing merges.txt"):
    tok_lib.load_tokenizer(str(tmp_path))


def test_bundled_tokenizer_is_clips_vocabulary():
  """The BPE table shipped in third_party gives CLIP's ids (the tiny config relies on it)."""
  with open(BPE, "rb") as f:
    assert hashlib.sha256(f.read()).hexdigest() == BPE_SHA256
  ids = tok_lib.tokenize(tok_lib.bundled_tokenizer(), ["a photo of a cat"])[0]
  np.testing.assert_array_equal(ids[:8], [49406, 320, 1125, 539, 320, 2368, 49407, 49407])

"""Checkpoint loading: every kind of bad folder gives one `CheckpointError` naming its
cause; fp16 variants, sharded checkpoints and whole SD folders load."""

import copy
import json
import os
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from safetensors.numpy import load_file, save_file

from tip_jax.convert.diffusers import load_backbone, load_component
from tip_jax.errors import CheckpointError
from tip_jax.models import tokenizer as tok_lib

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

BPE = tok_lib.bundled_bpe_path()  # CLIP's real BPE table, shipped in third_party/
WEIGHTS = "diffusion_pytorch_model.safetensors"
TEXT_DIM = 32
UNET = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=4, cross_attention_dim=TEXT_DIM, sample_size=8)
VAE = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
           latent_channels=4, sample_size=16, scaling_factor=0.13025,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
CLIP = dict(vocab_size=49408, hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def _perturb(model, seed: int):
  """Random offsets on every weight, so zero-initialised layers are exercised too."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))
  return model.eval()


def _message(excinfo) -> str:
  return str(excinfo.value)


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
  """(torch UNet, a saved fp32 checkpoint root holding unet/)."""
  torch.manual_seed(0)
  model = _perturb(diffusers.UNet2DConditionModel(**UNET), 1)
  root = tmp_path_factory.mktemp("unet32")
  model.save_pretrained(root / "unet")
  return model, root


@pytest.fixture
def unet_copy(unet, tmp_path):
  """A private copy of the saved UNet folder, and its weights as a numpy state dict."""
  folder = tmp_path / "unet"
  shutil.copytree(unet[1] / "unet", folder)
  return folder, load_file(str(folder / WEIGHTS))


def _rewrite(folder: Path, state: dict) -> None:
  save_file(state, str(folder / WEIGHTS))


# --- 1-3: tensors that do not fit the model -----------------------------------------------------

@pytest.mark.parametrize("key,shape", [
    ("down_blocks.0.resnets.0.conv1.weight", (16, 16, 1, 1)),                  # conv, OIHW
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", (16, 24)),  # linear
    ("conv_norm_out.bias", (8,)),
], ids=["conv", "linear", "bias"])
def test_wrong_shape_names_key_and_both_shapes(unet_copy, key, shape):
  folder, state = unet_copy
  stored = state[key].shape
  state[key] = np.zeros(shape, np.float32)
  _rewrite(folder, state)
  with pytest.raises(CheckpointError) as e:
    load_component(str(folder), "unet")
  msg = _message(e)
  # Both shapes in the checkpoint's own (torch) layout, so they compare with the file's.
  assert f"key {key!r} has shape {shape}, the unet model expects {tuple(stored)}" in msg, msg


def test_linear_weight_with_spatial_dims_is_not_squeezed(unet_copy):
  """Only (out, in, 1, 1) legacy conv projections may stand in for a linear weight."""
  folder, state = unet_copy
  key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
  state[key] = np.zeros(state[key].shape + (3, 3), np.float32)
  _rewrite(folder, state)
  with pytest.raises(CheckpointError, match=re.escape(f"{key!r} has shape (16, 16, 3, 3)")):
    load_component(str(folder), "unet")


def test_missing_key_names_flax_path_and_shape(unet_copy):
  folder, state = unet_copy
  del state["conv_in.weight"]
  _rewrite(folder, state)
  with pytest.raises(CheckpointError, match=re.escape("conv_in/kernel (shape (3, 3, 4, 16))")):
    load_component(str(folder), "unet")


def test_unexpected_key_is_named(unet_copy):
  folder, state = unet_copy
  state["down_blocks.0.extra_proj.weight"] = np.ones((4, 4), np.float32)
  _rewrite(folder, state)
  with pytest.raises(CheckpointError) as e:
    load_component(str(folder), "unet")
  assert "unexpected key 'down_blocks.0.extra_proj.weight' (shape (4, 4))" in _message(e)


# --- 4-8: folders, files and configs that are not a checkpoint ----------------------------------

def test_missing_weights_file(unet_copy):
  folder, _ = unet_copy
  os.remove(folder / WEIGHTS)
  (folder / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
  with pytest.raises(CheckpointError) as e:
    load_component(str(folder), "unet")
  msg = _message(e)
  assert str(folder) in msg and "Only safetensors weights are read" in msg, msg
  assert "diffusion_pytorch_model.bin" in msg   # what was found instead


def test_missing_folder_and_folder_without_config(tmp_path):
  absent = tmp_path / "no_such_dir"
  with pytest.raises(CheckpointError, match=re.escape(f"{absent}: no such checkpoint folder")):
    load_component(str(absent), "unet")
  (tmp_path / "unet").mkdir()
  (tmp_path / "unet" / WEIGHTS).write_bytes(b"")
  with pytest.raises(CheckpointError, match="is not a diffusers checkpoint: no config.json"):
    load_component(str(tmp_path), "unet")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_safetensors(unet_copy, damage):
  folder, _ = unet_copy
  path = folder / WEIGHTS
  data = path.read_bytes()
  path.write_bytes({"truncated": data[:len(data) // 2], "garbage": os.urandom(4096),
                    "empty": b""}[damage])
  with pytest.raises(CheckpointError, match="not a readable safetensors file") as e:
    load_component(str(folder), "unet")
  assert str(path) in _message(e)


def test_corrupt_shard_index(unet_copy):
  folder, _ = unet_copy
  os.remove(folder / WEIGHTS)
  index = folder / f"{WEIGHTS}.index.json"
  index.write_text('{"weight_map": ')
  with pytest.raises(CheckpointError, match="not a valid safetensors shard index") as e:
    load_component(str(folder), "unet")
  assert str(index) in _message(e)
  index.write_text(json.dumps({"weight_map": {"conv_in.weight": "shard-1.safetensors"}}))
  with pytest.raises(CheckpointError, match="shard-1.safetensors: not a readable safetensors"):
    load_component(str(folder), "unet")


def test_config_not_json(unet_copy):
  folder, _ = unet_copy
  (folder / "config.json").write_text('{"block_out_channels": [16, 32],')
  with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
    load_component(str(folder), "unet")
  (folder / "config.json").write_text("[]")
  with pytest.raises(CheckpointError, match="holds a list, not a config object"):
    load_component(str(folder), "unet")


@pytest.mark.parametrize("option,value", [
    ("addition_embed_type", "text_time"),
    ("down_block_types", ["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
])
def test_config_with_unsupported_option(unet_copy, option, value):
  folder, _ = unet_copy
  cfg = json.loads((folder / "config.json").read_text())
  (folder / "config.json").write_text(json.dumps({**cfg, option: value}))
  with pytest.raises(CheckpointError, match="does not describe a supported unet") as e:
    load_component(str(folder), "unet")
  shown = option if option == "addition_embed_type" else value[0]
  assert shown in _message(e), _message(e)


def test_unknown_component_lists_valid_names(unet):
  with pytest.raises(CheckpointError) as e:
    load_component(str(unet[1]), "text_encoder_2")
  msg = _message(e)
  assert "'text_encoder_2'" in msg
  assert all(n in msg for n in ("unet", "vae", "text_encoder", "controlnet")), msg


# --- 9: fp16 variant and sharded checkpoints ---------------------------------------------------

def test_fp16_variant_loads_as_float32(unet, tmp_path):
  model, _ = unet
  copy.deepcopy(model).half().save_pretrained(tmp_path / "unet", variant="fp16")
  assert (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
  module, params = load_component(str(tmp_path), "unet")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  r = np.random.default_rng(0)
  sample = r.standard_normal((2, 8, 8, 4), np.float32)
  t = np.array([10, 700])
  text = r.standard_normal((2, 7, TEXT_DIM), np.float32)
  ours = jax.jit(module.apply)({"params": params}, sample, t, text)
  with torch.no_grad():
    ref = model(torch.from_numpy(sample.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t),
                torch.from_numpy(text)).sample.numpy().transpose(0, 2, 3, 1)
  # Only the weights are rounded to fp16 (compute stays float32). Measured max abs diff
  # vs the float32 torch UNet: 1.9e-3 on outputs up to ~1.7.
  assert np.abs(np.asarray(ours) - ref).max() <= 1e-2


def test_sharded_checkpoint_matches_single_file(unet, tmp_path):
  model, root = unet
  model.save_pretrained(tmp_path / "unet", max_shard_size="20KB")
  names = os.listdir(tmp_path / "unet")
  assert f"{WEIGHTS}.index.json" in names and WEIGHTS not in names
  assert sum(n.endswith(".safetensors") for n in names) > 2, names   # 32 here
  _, single = load_component(str(root), "unet")
  _, sharded = load_component(str(tmp_path), "unet")
  single, sharded = flatten_dict(single), flatten_dict(sharded)
  assert single.keys() == sharded.keys()
  for path in single:
    np.testing.assert_array_equal(np.asarray(sharded[path]), np.asarray(single[path]),
                                  err_msg=str(path))


# --- 10: a whole Stable Diffusion folder -------------------------------------------------------

@pytest.fixture(scope="module")
def sd_folder(unet, tmp_path_factory):
  """A tiny SD2-style (v-prediction) folder, and its torch text encoder."""
  model, unet_root = unet
  root = tmp_path_factory.mktemp("sd")
  shutil.copytree(unet_root / "unet", root / "unet")
  torch.manual_seed(0)
  _perturb(diffusers.AutoencoderKL(**VAE), 2).save_pretrained(root / "vae")
  text_encoder = _perturb(transformers.CLIPTextModel(transformers.CLIPTextConfig(**CLIP)), 3)
  text_encoder.save_pretrained(root / "text_encoder")
  tok_lib.write_tokenizer_folder(str(BPE), str(root / "tokenizer"))
  diffusers.DDIMScheduler(prediction_type="v_prediction").save_pretrained(root / "scheduler")
  return root, text_encoder


def test_load_backbone(sd_folder):
  root, text_encoder = sd_folder
  backbone = load_backbone(str(root))
  assert backbone.prediction_type == "v_prediction"
  assert backbone.scheduler_config["prediction_type"] == "v_prediction"
  assert backbone.scaling_factor == pytest.approx(0.13025)
  for part in (backbone.unet, backbone.vae, backbone.text_encoder):
    module, params = part
    assert jax.tree.leaves(params) and hasattr(module, "apply")
  assert backbone.unet.module.config.cross_attention_dim == TEXT_DIM
  assert backbone.vae.module.config.block_out_channels == (16, 32)

  ids = tok_lib.tokenize(backbone.tokenizer, ["a photo of a cat"])
  assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
  module, params = backbone.text_encoder
  ours = np.asarray(jax.jit(module.apply)({"params": params}, jnp.asarray(ids)))
  with torch.no_grad():
    ref = text_encoder(input_ids=torch.from_numpy(ids.astype(np.int64))).last_hidden_state
  # Measured max abs diff: 1.2e-6 (float32, CPU) on outputs up to ~3.2.
  assert np.abs(ours - ref.numpy()).max() <= 1e-4


def test_load_backbone_missing_subfolder(sd_folder, tmp_path):
  root, _ = sd_folder
  partial = tmp_path / "sd"
  shutil.copytree(root, partial, ignore=lambda d, names: ["vae"] if Path(d) == root else [])
  with pytest.raises(CheckpointError, match=re.escape(f"{partial}: missing subfolder(s) vae")):
    load_backbone(str(partial))


def test_load_backbone_not_an_sd_folder(tmp_path):
  with pytest.raises(CheckpointError, match="is not a diffusers Stable Diffusion folder"):
    load_backbone(str(tmp_path))
  with pytest.raises(CheckpointError, match="is not a diffusers Stable Diffusion folder"):
    load_backbone(str(tmp_path / "absent"))

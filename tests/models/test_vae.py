"""AutoencoderKL parity with diffusers (torch, CPU) on tiny random checkpoints."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from safetensors.numpy import load_file, save_file

from tip_jax.convert import diffusers as convert
from tip_jax.models import params as params_lib
from tip_jax.models import vae as vae_lib
from tip_jax.models.layers import ModelOptions

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

_TINY = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
             latent_channels=4, sample_size=32,
             down_block_types=("DownEncoderBlock2D",) * 2,
             up_block_types=("UpDecoderBlock2D",) * 2)


def _torch_vae(seed: int = 0, **overrides):
  """A tiny diffusers VAE whose every param is perturbed, so zero-init biases, unit
  norm scales and identity-like parts cannot hide a wrong name or transpose."""
  torch.manual_seed(seed)
  vae = diffusers.AutoencoderKL(**{**_TINY, **overrides}).eval()
  with torch.no_grad():
    for p in vae.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return vae


def _inputs(seed: int = 1):
  r = np.random.default_rng(seed)
  image = r.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)   # NCHW, as torch wants
  latent = r.normal(size=(2, 4, 8, 8)).astype(np.float32)
  return image, latent


def _torch_outputs(vae, image, latent):
  with torch.no_grad():
    dist = vae.encode(torch.from_numpy(image)).latent_dist
    decoded = vae.decode(torch.from_numpy(latent)).sample
  return dist.mean.numpy(), dist.logvar.numpy(), decoded.numpy()


def _jax_outputs(module, params, image, latent):
  nhwc = lambda x: jnp.asarray(x.transpose(0, 2, 3, 1))
  nchw = lambda x: np.asarray(x).transpose(0, 3, 1, 2)
  encode = jax.jit(lambda p, x: module.apply({"params": p}, x, method=module.encode))
  decode = jax.jit(lambda p, z: module.apply({"params": p}, z, method=module.decode))
  mean, logvar = encode(params, nhwc(image))
  return nchw(mean), nchw(logvar), nchw(decode(params, nhwc(latent)))


def _max_diffs(a, b):
  return [float(np.max(np.abs(x - y))) for x, y in zip(a, b)]


@pytest.mark.parametrize("overrides", [
    {},
    {"use_quant_conv": False, "use_post_quant_conv": False, "mid_block_add_attention": False},
], ids=["default", "no_quant_no_attn"])
def test_parity_with_diffusers(tmp_path, overrides):
  vae = _torch_vae(**overrides)
  vae.save_pretrained(tmp_path / "vae")
  module, params = convert.load_component(str(tmp_path), "vae")
  assert module.config.block_out_channels == (32, 64)
  assert module.config.use_quant_conv == overrides.get("use_quant_conv", True)
  image, latent = _inputs()
  want = _torch_outputs(vae, image, latent)
  got = _jax_outputs(module, params, image, latent)
  for w, g in zip(want, got):
    assert w.shape == g.shape
  # Measured max abs diffs (float32, CPU; outputs up to ~3 in magnitude):
  # default mean 3.1e-6, logvar 2.9e-6, decode 4.3e-6; no_quant_no_attn 5.0e-6, 4.4e-6, 4.9e-6.
  assert max(_max_diffs(want, got)) <= 1e-4, _max_diffs(want, got)


def test_fp16_variant_loads(tmp_path):
  vae = _torch_vae()
  image, latent = _inputs()
  want = _torch_outputs(vae, image, latent)
  vae.half().save_pretrained(tmp_path / "vae", variant="fp16")
  assert os.path.isfile(tmp_path / "vae" / "diffusion_pytorch_model.fp16.safetensors")
  module, params = convert.load_component(str(tmp_path), "vae")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  got = _jax_outputs(module, params, image, latent)
  # Only the weights are rounded to fp16 (compute stays float32); measured max abs
  # diffs vs the float32 torch model: mean 2.6e-3, logvar 2.6e-3, decode 2.3e-3.
  assert max(_max_diffs(want, got)) <= 1e-2, _max_diffs(want, got)


def test_legacy_attention_names(tmp_path):
  """diffusers < 0.14 VAEs name the mid-block attention query/key/value/proj_attn and
  store its projections as 1x1 convs; both must land on the same Flax params."""
  _torch_vae().save_pretrained(tmp_path / "new")
  _, want = convert.load_component(str(tmp_path / "new"), "vae")
  legacy = tmp_path / "legacy"
  legacy.mkdir()
  shutil.copy(tmp_path / "new" / "config.json", legacy / "config.json")
  renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  state, renamed = load_file(str(tmp_path / "new" / "diffusion_pytorch_model.safetensors")), {}
  for key, value in state.items():
    for new, old in renames.items():
      if f".attentions.0.{new}." in key:
        key = key.replace(f".{new}.", f".{old}.")
        if key.endswith(".weight"):
          value = value[:, :, None, None]
    renamed[key] = value
  assert sum(".proj_attn.weight" in k for k in renamed) == 2   # encoder and decoder
  save_file(renamed, str(legacy / "diffusion_pytorch_model.safetensors"))
  _, got = convert.load_component(str(legacy), "vae")
  want, got = flatten_dict(want), flatten_dict(got)
  assert want.keys() == got.keys()
  for path in want:
    np.testing.assert_array_equal(np.asarray(want[path]), np.asarray(got[path]), err_msg=str(path))


def test_sd_param_count():
  module = vae_lib.AutoencoderKL(vae_lib.VAEConfig.sd())
  assert params_lib.count_params(params_lib.abstract_params(module)) == 83_653_863


def test_from_diffusers_config():
  cfg = {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512],
         "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
         "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32, "act_fn": "silu",
         "sample_size": 512, "scaling_factor": 0.18215, "in_channels": 3, "out_channels": 3}
  assert vae_lib.VAEConfig.from_diffusers(cfg) == vae_lib.VAEConfig.sd()
  with pytest.raises(ValueError, match="AttnDownEncoderBlock2D"):
    vae_lib.VAEConfig.from_diffusers({**cfg, "down_block_types": ["AttnDownEncoderBlock2D"] * 4})
  with pytest.raises(ValueError, match="act_fn"):
    vae_lib.VAEConfig.from_diffusers({**cfg, "act_fn": "gelu"})
  with pytest.raises(ValueError, match="UpDecoderBlock2D"):
    vae_lib.VAEConfig.from_diffusers({**cfg, "up_block_types": ["UpDecoderBlock2D", "Other"] * 2})


def test_logical_axes_cover_every_param():
  module = vae_lib.AutoencoderKL(vae_lib.VAEConfig(**{k: v for k, v in _TINY.items()
                                                      if k in ("block_out_channels",
                                                               "layers_per_block",
                                                               "norm_num_groups")}))
  specs = flatten_dict(params_lib.logical_axes(module))
  shapes = flatten_dict(params_lib.param_shapes(module))
  assert specs.keys() == shapes.keys()
  for path, spec in specs.items():
    assert len(spec) == len(shapes[path].shape), path
  assert ("encoder", "mid_block", "attentions_0", "to_q", "kernel") in shapes
  assert ("decoder", "up_blocks_1", "resnets_1", "conv1", "kernel") in shapes
  assert ("decoder", "up_blocks_0", "upsamplers_0", "conv", "kernel") in shapes
  assert ("encoder", "down_blocks_1", "downsamplers_0") not in {p[:3] for p in shapes}


def test_remat_and_bf16_keep_the_param_tree(tmp_path):
  """Remat wraps blocks without renaming params, and bf16 compute stays near float32."""
  _torch_vae().save_pretrained(tmp_path / "vae")
  module, params = convert.load_component(str(tmp_path), "vae")
  options = ModelOptions(dtype=jnp.bfloat16, remat_policy="nothing_saveable")
  fast = vae_lib.AutoencoderKL(module.config, options)
  assert jax.tree.structure(params_lib.param_shapes(fast)) == jax.tree.structure(params)
  image, latent = _inputs()
  want = _jax_outputs(module, params, image, latent)
  got = _jax_outputs(fast, params, image, latent)
  # bf16 has an 8-bit mantissa; measured max abs diffs: mean 0.047, logvar 0.037,
  # decode 0.054, on outputs up to ~3.
  diffs = _max_diffs(want, [np.asarray(g, np.float32) for g in got])
  assert max(diffs) < 0.3, diffs

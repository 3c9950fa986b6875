"""UNet and ControlNet: parity with diffusers (PyTorch), sizes, TIP fusion identity at init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tip_jax.convert.diffusers import load_component
from tip_jax.models import params as params_lib
from tip_jax.models import tip
from tip_jax.models.controlnet import (FUSIONS, ControlNetConfig, ControlNetModel,
                                       VAEHintEncoder, controlnet_params_from_unet)
from tip_jax.models.layers import ModelOptions
from tip_jax.models.unet import UNet2DConditionModel, UNetConfig
from tip_jax.models.vae import AutoencoderKL, VAEConfig

diffusers = pytest.importorskip("diffusers")

TINY = dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=24, sample_size=16)
STYLES = {
    "sd1": dict(attention_head_dim=4),
    "sd2": dict(attention_head_dim=(2, 4, 4), use_linear_projection=True, upcast_attention=True),
}


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Random offsets on every weight, so zero-initialised layers are exercised too."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))
  return model.eval()


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module", params=sorted(STYLES))
def saved(request, tmp_path_factory):
  """A tiny random diffusers UNet + ControlNet saved as safetensors, and the torch models."""
  torch.manual_seed(0)
  unet = _perturb(diffusers.UNet2DConditionModel(**TINY, **STYLES[request.param]), 1)
  controlnet = _perturb(diffusers.ControlNetModel.from_unet(unet), 2)
  root = tmp_path_factory.mktemp(request.param)
  unet.save_pretrained(root / "unet")
  controlnet.save_pretrained(root / "controlnet")
  return root, unet, controlnet


@pytest.fixture(scope="module")
def inputs():
  r = np.random.default_rng(0)
  return dict(sample=r.standard_normal((2, 16, 16, 4), np.float32),
              t=np.array([10, 700]),
              text=r.standard_normal((2, 7, 24), np.float32),
              cond=r.uniform(0, 1, (2, 128, 128, 3)).astype(np.float32))


def test_unet_matches_diffusers(saved, inputs):
  root, unet, _ = saved
  module, p = load_component(str(root), "unet")
  ours = module.apply({"params": p}, inputs["sample"], inputs["t"], inputs["text"])
  with torch.no_grad():
    ref = unet(_nchw(inputs["sample"]), torch.from_numpy(inputs["t"]),
               torch.from_numpy(inputs["text"])).sample
  # measured: sd1 ≈ 3e-6, sd2 ≈ 3e-6 (float32, CPU)
  assert np.abs(np.asarray(ours) - _nhwc(ref)).max() <= 1e-4


def test_additive_controlnet_matches_diffusers(saved, inputs):
  root, _, controlnet = saved
  module, p = load_component(str(root), "controlnet")
  assert (module.config.conditioning, module.config.fusion) == ("add", "additive")
  down, mid = module.apply({"params": p}, inputs["sample"], inputs["t"], inputs["text"],
                           inputs["cond"])
  with torch.no_grad():
    ref_down, ref_mid = controlnet(_nchw(inputs["sample"]), torch.from_numpy(inputs["t"]),
                                   torch.from_numpy(inputs["text"]), _nchw(inputs["cond"]),
                                   return_dict=False)
  assert len(down) == len(ref_down)
  errors = [np.abs(np.asarray(a) - _nhwc(b)).max() for a, b in zip(down, ref_down)]
  errors.append(np.abs(np.asarray(mid) - _nhwc(ref_mid)).max())
  assert max(errors) <= 1e-4   # measured ≈ 1e-6


def test_unet_with_additive_controlnet_matches_diffusers(saved, inputs):
  """The fusion hook reproduces diffusers' down/mid residual injection."""
  root, unet, controlnet = saved
  unet_module, up = load_component(str(root), "unet")
  cn_module, cp = load_component(str(root), "controlnet")
  ours = tip.predict(unet_module, cn_module, up, cp, inputs["sample"], inputs["t"],
                     inputs["text"], inputs["text"], inputs["cond"], control_scale=0.7)
  with torch.no_grad():
    args = (_nchw(inputs["sample"]), torch.from_numpy(inputs["t"]),
            torch.from_numpy(inputs["text"]))
    down, mid = controlnet(*args, _nchw(inputs["cond"]), conditioning_scale=0.7,
                           return_dict=False)
    ref = unet(*args, down_block_additional_residuals=down,
               mid_block_additional_residual=mid).sample
  assert np.abs(np.asarray(ours) - _nhwc(ref)).max() <= 1e-4


@pytest.fixture(scope="module")
def frozen_unet():
  ucfg = UNetConfig(**TINY, **STYLES["sd2"])
  unet = UNet2DConditionModel(ucfg)
  return ucfg, unet, params_lib.init_params(unet, jax.random.key(0))


@pytest.fixture(scope="module", params=FUSIONS)
def tip_controlnet(request, frozen_unet):
  ucfg, _, unet_params = frozen_unet
  controlnet = ControlNetModel(ControlNetConfig.tip(ucfg, request.param))
  return controlnet, controlnet_params_from_unet(controlnet, unet_params, jax.random.key(1))


def test_tip_prediction_equals_frozen_unet_at_init(frozen_unet, tip_controlnet, inputs):
  _, unet, unet_params = frozen_unet
  controlnet, cn_params = tip_controlnet
  semantic = jnp.asarray(inputs["text"])
  restoration = semantic[::-1]
  frozen = unet.apply({"params": unet_params}, inputs["sample"], inputs["t"], semantic)
  ours = tip.predict(unet, controlnet, unet_params, cn_params, inputs["sample"], inputs["t"],
                     semantic, restoration, inputs["cond"] * 2 - 1)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(frozen))
  # The branch really is live: a non-zero fusion conv changes the prediction.
  nudged = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.1 if "controlnet_mid_block" in jax.tree_util.keystr(path) else x,
      cn_params)
  moved = tip.predict(unet, controlnet, unet_params, nudged, inputs["sample"], inputs["t"],
                      semantic, restoration, inputs["cond"] * 2 - 1)
  assert np.abs(np.asarray(moved) - np.asarray(frozen)).max() > 1e-3


def test_concat_conditioning_copies_unet_conv_in(frozen_unet, tip_controlnet):
  ucfg, _, unet_params = frozen_unet
  _, cn = tip_controlnet
  kernel = cn["conv_in"]["kernel"]
  assert kernel.shape[2] == ucfg.in_channels + 256
  np.testing.assert_array_equal(kernel[:, :, :4], unet_params["conv_in"]["kernel"])
  assert not np.any(kernel[:, :, 4:])
  for block in ("down_blocks_0", "mid_block", "time_embedding"):
    jax.tree.map(np.testing.assert_array_equal, cn[block], unet_params[block])


def test_modulation_formula():
  f = jnp.full((1, 2, 2, 3), 2.0)
  m = jnp.concatenate([jnp.full((1, 2, 2, 3), 0.5), jnp.full((1, 2, 2, 3), -1.0)], -1)
  hook = tip.fusion_hook(((m,), m), "modulate_skip", scale=1.0)
  np.testing.assert_allclose(hook("skip", 0, f), (1 + 0.5) * 2.0 - 1.0)
  np.testing.assert_allclose(hook("up", 0, f), f)   # decoder untouched without _and_up
  up_hook = tip.fusion_hook(((m,), m), "modulate_skip_and_up", scale=0.5)
  np.testing.assert_allclose(up_hook("up", 0, f), (1 + 0.25) * 2.0 - 0.5)


@pytest.mark.parametrize("name,config,expected", [
    ("unet sd15", UNetConfig.sd15(), 859_520_964),
    ("unet sd21", UNetConfig.sd21(), 865_910_724),
])
def test_full_size_unet_param_counts(name, config, expected):
  assert params_lib.count_params(params_lib.abstract_params(UNet2DConditionModel(config))) \
      == expected, name


def test_full_size_controlnet_param_counts():
  ucfg = UNetConfig.sd15()
  additive = ControlNetModel(ControlNetConfig(unet=ucfg, conditioning="add", fusion="additive"))
  assert params_lib.count_params(params_lib.abstract_params(additive)) == 361_279_120
  counts = {f: params_lib.count_params(params_lib.abstract_params(
      ControlNetModel(ControlNetConfig.tip(ucfg, f)))) for f in FUSIONS}
  assert counts == {"additive": 361_278_800, "modulate_skip": 372_758_480,
                    "modulate_skip_and_up": 394_490_320}


def test_bf16_remat_and_attention_impl_options(frozen_unet, inputs):
  """bf16 compute keeps fp32 params and stays close; remat and query-chunked attention
  change neither value nor grad."""
  ucfg, unet, unet_params = frozen_unet
  args = (inputs["sample"], inputs["t"], inputs["text"])
  # 16x16 latents: 256-token self-attention at the top level, split into 4 query blocks.
  remat = UNet2DConditionModel(ucfg, ModelOptions(remat_policy="nothing_saveable",
                                                  attention_impl="xla", attention_query_chunk=64))

  def loss(module):
    return jax.jit(jax.value_and_grad(
        lambda p: jnp.mean(module.apply({"params": p}, *args) ** 2)))

  (value, grads), (value_r, grads_r) = loss(unet)(unet_params), loss(remat)(unet_params)
  np.testing.assert_allclose(value_r, value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads_r, grads)

  bf16 = UNet2DConditionModel(ucfg, ModelOptions(dtype=jnp.bfloat16))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params_lib.param_shapes(bf16)))
  full = unet.apply({"params": unet_params}, *args)
  half = bf16.apply({"params": unet_params}, *args)
  assert half.dtype == jnp.float32
  # bf16 has an 8-bit mantissa: relative error of a few 1e-2 over ~30 layers; measured ≈ 0.03
  assert np.abs(np.asarray(half) - np.asarray(full)).max() <= 0.1 * np.abs(np.asarray(full)).max()


def _assert_tip_is_the_unet(unet, unet_params, controlnet, params, cond) -> None:
  """TIP's prediction with fresh ControlNet params equals the frozen UNet's, exactly."""
  z, t, text = unet.example_inputs(cond.shape[0])
  z = jax.random.normal(jax.random.key(2), z.shape)
  text = jax.random.normal(jax.random.key(3), text.shape)
  ours = tip.predict(unet, controlnet, unet_params, params, z, t, text, text, cond)
  np.testing.assert_array_equal(np.asarray(ours),
                                np.asarray(unet.apply({"params": unet_params}, z, t, text)))


@pytest.mark.parametrize("factor", [4, 8])
def test_tip_controlnet_follows_the_vae_downsampling(frozen_unet, factor):
  """E' has one stride-2 step per 2x of the VAE (the paper's three for SD's 8x), so the
  degraded image meets the latents on their grid; TIP still equals the UNet at init."""
  ucfg, unet, unet_params = frozen_unet
  controlnet = ControlNetModel(ControlNetConfig.tip(ucfg, downsample_factor=factor))
  assert controlnet.config.downsample_factor == factor
  assert controlnet.config.conditioning_embedding_out_channels[-1] == 256
  z = unet.example_inputs(2)[0]
  cond = controlnet.example_inputs(2)[3]
  assert cond.shape[1:3] == (factor * z.shape[1], factor * z.shape[2])
  params = controlnet_params_from_unet(controlnet, unet_params, jax.random.key(1))
  _assert_tip_is_the_unet(unet, unet_params, controlnet, params, cond)
  with pytest.raises(ValueError, match="expected 2, 4 or 8"):
    ControlNetConfig.tip(ucfg, downsample_factor=16)


def test_narrow_e_prime_widths(frozen_unet):
  """`widths` replaces ControlNet's four E' widths, truncated to the VAE's downsampling
  (a 4x VAE: the last three): its params take those shapes, conv_in takes the last width
  beside the latents, TIP equals the UNet at init."""
  ucfg, unet, unet_params = frozen_unet
  controlnet = ControlNetModel(ControlNetConfig.tip(ucfg, downsample_factor=4,
                                                    widths=(4, 8, 16, 24)))
  params = controlnet_params_from_unet(controlnet, unet_params, jax.random.key(1))
  e_prime = params["controlnet_cond_embedding"]
  assert [e_prime[k]["kernel"].shape[-1] for k in ("conv_in", "blocks_0", "blocks_1",
                                                    "blocks_2", "blocks_3")] == [8, 8, 16, 16,
                                                                                 24]
  assert params["conv_in"]["kernel"].shape[2] == ucfg.in_channels + 24
  _assert_tip_is_the_unet(unet, unet_params, controlnet, params,
                          controlnet.example_inputs(2)[3])
  assert ControlNetConfig.tip(ucfg, widths=(4, 8, 16, 24)
                              ).conditioning_embedding_out_channels == (4, 8, 16, 24)
  with pytest.raises(ValueError, match="expected 4 positive widths"):
    ControlNetConfig.tip(ucfg, downsample_factor=4, widths=(16, 32, 64))
  with pytest.raises(ValueError, match="'vae' copies the encoder"):
    ControlNetConfig.tip(ucfg, vae=VAEConfig.tiny(), widths=(8, 16, 32, 64))


def test_vae_conditioning_starts_as_the_vae_encoder(frozen_unet):
  """`conditioning="vae"`: E' is a copy of the VAE encoder, so E'(y) is y's scaled
  posterior mean at init, on the latent grid, and TIP still equals the UNet at init."""
  ucfg, unet, unet_params = frozen_unet
  vcfg = VAEConfig.tiny()
  vae = AutoencoderKL(vcfg)
  vae_params = params_lib.init_params(vae, jax.random.key(4))
  controlnet = ControlNetModel(ControlNetConfig.tip(ucfg, vae=vcfg))
  assert controlnet.config.conditioning == "vae"
  assert controlnet.config.downsample_factor == vcfg.downsample_factor
  params = controlnet_params_from_unet(controlnet, unet_params, jax.random.key(1), vae_params)
  y = jax.random.uniform(jax.random.key(5), controlnet.example_inputs(2)[3].shape) * 2 - 1
  hint = VAEHintEncoder(vcfg, ModelOptions()).apply(
      {"params": params["controlnet_cond_embedding"]}, y)
  mean = vae.apply({"params": vae_params}, y, method="encode")[0]
  np.testing.assert_array_equal(np.asarray(hint), np.asarray(mean * vcfg.scaling_factor))
  kernel = params["conv_in"]["kernel"]
  assert kernel.shape[2] == ucfg.in_channels + vcfg.latent_channels
  assert not np.any(kernel[:, :, ucfg.in_channels:])
  _assert_tip_is_the_unet(unet, unet_params, controlnet, params, y)
  with pytest.raises(ValueError, match="give vae_params"):
    controlnet_params_from_unet(controlnet, unet_params, jax.random.key(1))
  with pytest.raises(ValueError, match="only with, conditioning='vae'"):
    ControlNetConfig(unet=ucfg, conditioning="concat", vae=vcfg)

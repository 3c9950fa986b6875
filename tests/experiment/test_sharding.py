"""Logical-axis sharding on 8 fake CPU devices: specs follow the rules, results do not move."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tip_jax.models import params as params_lib
from tip_jax.models.unet import UNet2DConditionModel, UNetConfig
from tip_jax.errors import ConfigError
from tip_jax.experiment import sharding


@pytest.fixture(scope="module")
def unet():
  module = UNet2DConditionModel(UNetConfig.tiny())
  return module, params_lib.abstract_params(module), params_lib.init_params(module,
                                                                              jax.random.key(0))


def test_make_mesh_fills_the_free_axis():
  mesh = sharding.make_mesh({"data": 2, "fsdp": -1})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  with pytest.raises(ConfigError, match="needs 16 devices"):
    sharding.make_mesh({"data": 4, "fsdp": 4})
  with pytest.raises(ConfigError, match="at most one"):
    sharding.make_mesh([-1, -1, 1])


def test_fsdp_rules_give_the_expected_specs(unet):
  _, abstract, _ = unet
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8})
  specs = jax.tree.map(lambda s: s.spec, sharding.param_shardings(abstract, mesh,
                                                                  sharding.FSDP_RULES))
  block = specs["down_blocks_0"]
  assert block["resnets_0"]["conv1"]["kernel"] == P(None, None, None, "fsdp")   # 32 out ch.
  assert block["resnets_0"]["norm1"]["scale"] == P(None)                          # norms whole
  attn = block["attentions_0"]["transformer_blocks_0"]["attn1"]
  assert attn["to_q"]["kernel"] == P(None, "fsdp")                                # heads
  assert attn["to_out_0"]["kernel"] == P("fsdp", None)
  ff = block["attentions_0"]["transformer_blocks_0"]["ff"]
  assert ff["net_2"]["kernel"] == P("fsdp", None)                                 # mlp in
  assert specs["conv_out"]["kernel"] == P(None, None, None, None)                 # 4 % 8 != 0


def test_tensor_rules_split_heads_over_tensor(unet):
  _, abstract, _ = unet
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  specs = jax.tree.map(lambda s: s.spec, sharding.param_shardings(abstract, mesh,
                                                                  sharding.TENSOR_RULES))
  attn = specs["mid_block"]["attentions_0"]["transformer_blocks_0"]["attn2"]
  assert attn["to_k"]["kernel"] == P(None, "tensor")
  assert specs["mid_block"]["resnets_0"]["conv2"]["kernel"] == P(None, None, None, "fsdp")


def test_sharded_forward_equals_unsharded(unet):
  module, abstract, params = unet
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  shardings = sharding.param_shardings(abstract, mesh, sharding.FSDP_RULES)
  sharded = jax.device_put(params, shardings)
  assert sharding.bytes_per_device(sharded) < 0.5 * sum(x.nbytes for x in jax.tree.leaves(params))
  r = np.random.default_rng(0)
  x = r.standard_normal((8, 8, 8, 4), np.float32)
  t = np.arange(8) * 100
  text = r.standard_normal((8, 5, 32), np.float32)
  apply = jax.jit(lambda p, *a: module.apply({"params": p}, *a))
  expected = apply(params, x, t, text)
  inputs = [jax.device_put(a, sharding.batch_sharding(mesh, sharding.FSDP_RULES, a.ndim))
            for a in (x, t, text)]
  got = apply(sharded, *inputs)
  assert got.sharding.spec[0] in (("data", "fsdp"), "data")
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("build", ["unet", "controlnet", "vae", "text"])
def test_every_param_has_one_logical_name_per_dim(build):
  from tip_jax.models.clip_text import CLIPTextConfig, CLIPTextModel
  from tip_jax.models.controlnet import ControlNetConfig, ControlNetModel
  from tip_jax.models.vae import AutoencoderKL, VAEConfig
  module = {"unet": lambda: UNet2DConditionModel(UNetConfig.sd15()),
            "controlnet": lambda: ControlNetModel(ControlNetConfig.tip(UNetConfig.sd21())),
            "vae": lambda: AutoencoderKL(VAEConfig.sd()),
            "text": lambda: CLIPTextModel(CLIPTextConfig.sd21())}[build]()
  abstract = params_lib.abstract_params(module)   # full size, nothing allocated
  leaves = jax.tree.leaves(abstract, is_leaf=lambda x: hasattr(x, "names"))
  assert leaves and all(len(leaf.names) == len(leaf.value.shape) for leaf in leaves)

"""`config.task` picks what is trained; each task trains its own module, reads only the
frozen params it needs and starts from the backbone's weights."""

from pathlib import Path

import jax
import numpy as np
import pytest

from tip_jax.errors import ConfigError
from tip_jax.experiment import components, sharding, tasks
from tip_jax.experiment.config import load_config
from tip_jax.models import params as params_lib
from tip_jax.models.controlnet import ControlNetModel
from tip_jax.models.unet import UNet2DConditionModel
from tip_jax.models.vae import AutoencoderKL

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _task(spec: str, abstract: bool = True, **overrides):
  config = load_config(str(CONFIGS / spec), {"model.backbone": "random", "model.geometry": "tiny", **overrides})
  comps = components.build(config, abstract=abstract)
  mesh = sharding.make_mesh({"data": -1}, jax.devices()[:1])
  return config, comps, tasks.build(config, comps, mesh, ("data",),
                                    components.degrade_config(config))


@pytest.mark.parametrize("spec,module,frozen", [
    ("tip.py:tiny", ControlNetModel, ("unet", "vae", "text_encoder")),
    ("prior.py:vae", AutoencoderKL, ()),
    ("prior.py:unet", UNet2DConditionModel, ("vae", "text_encoder")),
])
def test_each_task_trains_its_own_module(spec, module, frozen):
  config, comps, task = _task(spec)
  assert task.name == config.task and isinstance(task.module, module)
  assert task.frozen_parts == frozen
  assert ("restoration_ids" in task.device_keys) == (config.task == "tip")
  assert set(task.extra_frozen) == ({"lpips"} if config.task == "vae" else set())
  assert jax.tree.structure(params_lib.param_shapes(task.module)) == jax.tree.structure(
      params_lib.param_shapes(comps.controlnet if config.task == "tip" else
                              getattr(comps.backbone, config.task).module))


def test_a_pretrained_part_starts_from_the_backbones_weights():
  """Random ones (model.backbone=random, seeded) train from scratch; a folder's are
  fine-tuned."""
  _, comps, task = _task("prior.py:vae", abstract=False)
  initial = task.initial_params()
  assert task.module is comps.backbone.vae.module
  for ours, backbone in zip(jax.tree.leaves(initial), jax.tree.leaves(comps.backbone.vae.params)):
    np.testing.assert_array_equal(ours, backbone)
    assert ours.dtype == np.float32


def test_the_vae_task_without_lpips_reads_no_lpips_weights():
  _, _, task = _task("prior.py:vae", **{"vae.lpips_weight": 0.0})
  assert task.extra_frozen == {}


def test_the_unet_task_learns_the_prediction_type_its_config_names():
  _, comps, task = _task("prior.py:unet", **{"unet.prediction_type": "v_prediction"})
  assert comps.backbone.prediction_type == "v_prediction"
  assert comps.backbone.schedule().prediction_type == "v_prediction"
  assert task.module.config.prediction_type == "v_prediction"


def test_an_unknown_task_is_refused():
  config = load_config(str(CONFIGS / "tip.py:tiny"), {"task": "gan", "model.backbone": "random"})
  comps = components.build(config, abstract=True)
  with pytest.raises(ConfigError, match="task='gan': expected one of"):
    tasks.trained_module(config, comps)


def test_the_unet_base_needs_a_backbone_folder():
  with pytest.raises(ConfigError, match="model.backbone is not set"):
    components.build(load_config(str(CONFIGS / "prior.py:unet")), abstract=True)
  with pytest.raises(ConfigError, match="unknown config part"):
    load_config(str(CONFIGS / "prior.py:gan"))

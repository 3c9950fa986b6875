"""`config.task` picks what is trained; each task trains its own module, reads only the
frozen params it needs and starts from the backbone's weights."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tip_jax.degrade import params_to_tree, sample_params
from tip_jax.errors import ConfigError
from tip_jax.estimate.network import DegradationEstimator
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


def test_the_estimator_task_learns_the_drawn_degradations_from_8_bit_images():
  """No backbone weights are read; the step's inputs are the degraded crops rounded to
  8 bits, the targets the drawn parameters; the loss masks what a draw does not define."""
  config, comps, task = _task("estimator.py:estimator", **{"data.resolution": 32,
                                                            "estimator.widths": (4, 8),
                                                            "estimator.head": 8})
  assert isinstance(task.module, DegradationEstimator) and task.frozen_parts == ()
  assert task.device_keys == ("image", "degrade", "index")
  assert isinstance(jax.tree.leaves(comps.backbone.params)[0], jax.ShapeDtypeStruct)
  degrade_config = components.degrade_config(config)
  params, _ = sample_params(0, 8, degrade_config)
  clean = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
  batch = {"image": clean, "index": np.arange(8, dtype=np.int32),
           "degrade": params_to_tree(jax.tree.map(lambda x: np.asarray(x)[None], params))}
  data = jax.jit(task.prepare)(batch, jnp.int32(0))
  on_grid = np.asarray(data["images"] + 1) * 127.5
  np.testing.assert_allclose(on_grid, np.round(on_grid), atol=1e-3)
  np.testing.assert_array_equal(np.asarray(data["blind"]) > 0.5, params.pipeline == 1)
  loss, parts = task.loss(task.initial_params(), {}, data)
  assert np.isfinite(loss) and {"blind_bce", "presence_bce", "strength_l1"} <= set(parts)
  assert float(parts["blind_bce"]) == pytest.approx(np.log(2), abs=1e-6)  # zero-init head


def test_the_estimator_draws_its_pipeline_per_example():
  with pytest.raises(ConfigError, match="degrade.mix='step': the estimator learns"):
    _task("estimator.py:estimator", **{"degrade.mix": "step"})

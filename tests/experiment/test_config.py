"""Configs load one way: `load_config(spec, overrides)`."""

import pytest

from tip_jax.data.config import DataConfig
from tip_jax.errors import ConfigError
from tip_jax.experiment.config import load_config, load_sweep


def test_overrides_and_the_one_base_rule():
  c = load_config("configs/tip.py:tiny", {"optim.lr": 0.5, "mesh": {"data": 2}})
  assert c.optim.lr == 0.5 and dict(c.mesh) == {"data": 2}
  # A spec that names no base uses tiny, ablations included.
  assert load_config("configs/tip.py").name == "tiny"
  assert load_config("configs/tip.py:controlnet_sr").name == "tiny_controlnet_sr"
  # The data block is DataConfig's fields, so `DataConfig(**config.data)` always works.
  assert set(load_config("configs/tip.py:sd15").data) == set(DataConfig.__dataclass_fields__)


def test_unknown_fields_and_files_are_config_errors():
  with pytest.raises(ConfigError, match="no field 'optim.lrr'"):
    load_config("configs/tip.py:tiny", {"optim.lrr": 1.0})
  with pytest.raises(ConfigError, match="no such config file"):
    load_config("configs/nope.py:tiny")


def test_sweeps_of_the_config_file(tmp_path):
  # sweep(): the full model and the paper's ablations, added to the launched base.
  assert load_sweep("configs/tip.py:sd15") == [
      ("configs/tip.py:sd15", {}), ("configs/tip.py:sd15,controlnet_sr", {}),
      ("configs/tip.py:sd15,no_params", {}), ("configs/tip.py:sd15,modulate_up", {})]
  assert [load_config(s, o).name for s, o in load_sweep("configs/tip.py")] == [
      "tiny", "tiny_controlnet_sr", "tiny_no_params", "tiny_modulate_up"]
  assert load_sweep("configs/tip.py:tiny", "sweep_seeds") == [
      ("configs/tip.py:tiny", {"seed": s}) for s in range(3)]
  # Every point is loaded up front: a typo or an unknown function fails at once.
  bad = tmp_path / "bad.py"
  bad.write_text(open("configs/tip.py").read() + "\n\ndef sweep_typo():\n"
                 "  return [{'seed': 1}, {'optim.lrr': 1.0}]\n")
  with pytest.raises(ConfigError, match="no field 'optim.lrr'"):
    load_sweep(f"{bad}:tiny", "sweep_typo")
  with pytest.raises(ConfigError, match="defines no sweep function 'sweep_nope'"):
    load_sweep("configs/tip.py", "sweep_nope")


def test_model_choices_are_checked_when_the_models_are_built():
  from tip_jax.experiment import components
  for field, value, expected in (("model.fusion", "blend", "model.fusion='blend'"),
                                 ("model.conditioning", "add",
                                  r"model.conditioning='add': expected one of \('concat', "
                                  r"'vae'\)"),
                                 ("model.timestep_spacing", "even",
                                  "model.timestep_spacing='even'"),
                                 ("model.conditioning_widths", (16, 32, 64),
                                  r"model.conditioning_widths=\(16, 32, 64\): E' widths")):
    config = load_config("configs/tip.py:tiny", {field: value, "model.backbone": "random"})
    with pytest.raises(ConfigError, match=expected):
      components.build(config, abstract=True)


def test_timestep_spacing_overrides_the_backbones_scheduler_config():
  """Every sampler reads the schedule from the built backbone, so the option reaches the
  trainer's grids, the evaluator and the restorer alike."""
  from tip_jax.diffusion import samplers
  from tip_jax.experiment import components
  starts = {}
  for spacing in ("", "trailing"):
    config = load_config("configs/tip.py:tiny", {"model.timestep_spacing": spacing,
                                                 "model.backbone": "random"})
    schedule = components.build(config, abstract=True).backbone.schedule()
    starts[spacing] = [int(t) for t in samplers.ddim(schedule, 4).timesteps]
  assert starts == {"": [751, 501, 251, 1], "trailing": [999, 749, 499, 249]}

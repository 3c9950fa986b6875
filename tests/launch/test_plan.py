"""A launch plan: per sweep point a trainer on every worker of its TPU VM and an evaluator,
with the same config (as tip-train parses their arguments) and one workdir."""

import shlex

import pytest

from launch import plan
from launch.topology import parse
from tip_jax.errors import ConfigError
from tip_jax.experiment.config import load_config

BACKBONE = "--config.model.backbone=/data/stable diffusion"  # a space survives ssh


def _options(**kw):
  base = dict(config="configs/tip.py:sd15", workdir="gs://bucket/tip/", topology=parse("v5e-16"),
              tpus=("tpu-a",), zone="us-west4-a", overrides=(BACKBONE,), local_python="py")
  return plan.Options(**{**base, **kw})


def test_a_sweep_gives_a_work_unit_per_point_with_one_config_and_one_workdir():
  p = plan.build(_options(sweep="sweep", tpus=("a", "b", "c", "d")))
  assert [u.name for u in p.units] == ["1_base", "2_controlnet_sr", "3_no_params",
                                       "4_modulate_up"]
  for unit, tpu in zip(p.units, "abcd"):
    trainer, evaluator = unit.jobs
    assert (trainer.role, trainer.where, evaluator.role, evaluator.where) == (
        "trainer", tpu, "evaluator", plan.THIS_HOST)
    assert trainer.tip_args == ("--mode=train", *unit.config_args, "--distributed")
    assert evaluator.tip_args == ("--mode=eval", *unit.config_args)
    assert unit.workdir == f"gs://bucket/tip/{unit.name}"
    assert f"--workdir={unit.workdir}" in unit.config_args
    expected = load_config(unit.spec, {"model.backbone": "/data/stable diffusion"}).to_dict()
    assert plan.job_config(trainer).to_dict() == plan.job_config(evaluator).to_dict() == expected
  assert [u.spec for u in p.units] == ["configs/tip.py:sd15"] + [
      f"configs/tip.py:sd15,{a}" for a in ("controlnet_sr", "no_params", "modulate_up")]
  # The trainer runs on every worker of its VM, from the checkout there.
  command = p.units[0].jobs[0].command
  assert command[:6] == ("gcloud", "compute", "tpus", "tpu-vm", "ssh", "a")
  assert "--worker=all" in command and "--zone=us-west4-a" in command
  shell = command[-1].removeprefix("--command=")
  assert shell.startswith("cd tip_jax && python3 -m tip_jax.main ")
  assert shlex.split(shell)[6:] == list(p.units[0].jobs[0].tip_args)
  # Each VM is checked to be the topology asked for; this host to run tip_jax.
  assert [c.expect for c in p.checks] == ["v5litepod-16"] * 4 + [""]
  assert p.checks[0].command[-1] == "--format=value(acceleratorType)"


def test_sweep_values_become_flags_tip_train_parses_back():
  p = plan.build(_options(config="configs/tip.py:tiny", sweep="sweep_seeds",
                          tpus=("a", "b", "c"), eval_tpus=("e", "f", "g"), overrides=(
                              "--config.evals.sets=('embedded', '/data/coco')",)))
  assert [u.name for u in p.units] == ["1_seed=0", "2_seed=1", "3_seed=2"]
  for seed, unit in enumerate(p.units):
    trainer, evaluator = unit.jobs
    assert evaluator.where == "efg"[seed]
    assert evaluator.tip_args[-1] == "--distributed"  # an evaluator TPU VM: every worker
    config = plan.job_config(evaluator)
    assert config.seed == seed and config.evals.sets == ("embedded", "/data/coco")
    assert config.to_dict() == plan.job_config(trainer).to_dict()


def test_setup_copies_head_to_every_vm_once():
  p = plan.build(_options(tpus=("a",), eval_tpus=("e",), setup=True))
  assert p.setup[0][:4] == ("git", "-C", str(plan.ROOT), "archive")
  assert [c[4:6] for c in p.setup[1:]] == [("scp", str(plan._ARCHIVE)), ("ssh", "a"),
                                           ("scp", str(plan._ARCHIVE)), ("ssh", "e")]
  assert p.setup[2][-1].endswith("python3 -m pip install -e './tip_jax[tpu]'")


@pytest.mark.parametrize("kw, message", [
    (dict(sweep="sweep", tpus=("a", "b")), "--tpu names 2 TPU VM.s. for 4 work unit"),
    (dict(eval_tpus=("e", "f")), "--eval_tpu names 2 TPU VM.s. for 1 work unit"),
    (dict(overrides=("--workdir=/x",)), "only --config.FIELD=VALUE overrides follow"),
    (dict(overrides=("--config.optim.lrr=1",)), "config has no field 'optim.lrr'"),
    (dict(overrides=("--config.batch_size=many",)), "--config.batch_size=many"),
    (dict(sweep="sweep_nope"), "defines no sweep function 'sweep_nope'"),
    (dict(config="/elsewhere/tip.py"), "not a config file of this checkout"),
])
def test_mistakes_are_one_line_errors_before_anything_runs(kw, message):
  with pytest.raises(ConfigError, match=message):
    plan.build(_options(**kw))

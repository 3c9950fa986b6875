"""The trainer end to end on the tiny config: sharding, resume, SIGTERM, checkpoints.

Runs are tiny (32² crops, batch 8) and share the session's compilation cache with
the `tip-train` subprocesses some tests start (see conftest).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from tests.conftest import TEST_XLA_FLAGS
from tip_jax.errors import ConfigError
from tip_jax.experiment import checkpoint
from tip_jax.experiment import setup as setup_lib
from tip_jax.experiment import state as state_lib
from tip_jax.experiment.config import load_config
from tip_jax.train import trainer

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = ROOT / "configs" / "tip.py"
WORKER = ROOT / "tests" / "fixtures" / "train_worker.py"

# What every run here changes from the tiny config (also passed to subprocesses).
OVERRIDES = {"model.backbone": "random", "model.geometry": "tiny",
             "data.resolution": 32, "data.num_workers": 0, "batch_size": 8,
             "log_every_steps": 1, "checkpoint_every_steps": 3, "sample_every_steps": 0,
             "optim.warmup_steps": 2, "optim.schedule": "constant",
             "evals.after_training": False}


def tiny_config(**overrides):
  return load_config(f"{CONFIG_FILE}:tiny", {**OVERRIDES, **overrides})


def train_on_one_device(workdir, config=None, **overrides):
  """A run of `config` (default: the tiny config with `overrides`) in this process on its
  first device only. Most training tests use it, the fault tests with the worker's
  `--devices=1`: what they prove does not depend on the mesh, and one device compiles
  and saves in a fraction of eight fake ones' time (the two-process test covers meshes)."""
  config = config or tiny_config(**overrides)
  return trainer.train(config, str(workdir), devices=jax.devices()[:1])


def flags_for(**overrides) -> list[str]:
  return [f"--config={CONFIG_FILE}:tiny"] + [
      f"--config.{k}={v}" for k, v in {**OVERRIDES, **overrides}.items()]


def params_of(state) -> dict:
  return {k: np.asarray(v) for k, v in flatten_dict(jax.device_get(state.params)).items()}


def max_diff(a: dict, b: dict) -> float:
  assert a.keys() == b.keys()
  return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def subprocess_env(devices: int = 8) -> dict:
  """The test session's environment; this checkout first on the path (a script such as
  the worker would otherwise import the installed tip_jax)."""
  env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
  env["XLA_FLAGS"] = f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={devices}"
  return env


def test_sigterm_saves_the_current_step_and_exits_0(tmp_path):
  """Also the console as a person sees it: INFO logs go to workdir/logs, the console
  keeps the warnings and where things were written."""
  workdir = tmp_path / "run"
  console = tmp_path / "console.txt"
  log_file = workdir / "logs" / "tip-train.INFO"
  proc = subprocess.Popen(
      [sys.executable, "-m", "tip_jax.main", *flags_for(total_steps=10_000,
                                                        checkpoint_every_steps=10_000),
       f"--workdir={workdir}"], env=subprocess_env(devices=1), stderr=subprocess.STDOUT,
      stdout=open(console, "w"), cwd=ROOT)
  deadline = time.time() + 600
  while not log_file.exists() or "train step compiled" not in log_file.read_text():
    assert proc.poll() is None and time.time() < deadline, console.read_text()
    time.sleep(0.5)
  time.sleep(2)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=300) == 0, console.read_text()[-3000:]
  ours = [line for line in console.read_text().splitlines() if line.startswith("tip-train: ")]
  assert any("will save and stop" in line for line in ours), ours
  assert ours[-1] == f"tip-train: log: {log_file}"
  # Nothing else reaches the console: no INFO logs, no TensorFlow start-up notes.
  assert not [line for line in console.read_text().splitlines() if line not in ours]
  steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(steps) == 1 and 1 <= steps[0] < 10_000
  assert not checkpoint.is_complete(str(workdir))
  # (That a run stopped so resumes bitwise: tests/faults, test_sigterm_during_an_async_save.)


def test_nonfinite_gradients_skip_the_update():
  tx = state_lib.optimizer(tiny_config(**{"optim.warmup_steps": 0}))
  state = state_lib.create({"w": jax.numpy.ones(3)}, tx)
  grads = {"w": jax.numpy.array([1.0, np.nan, 0.0])}
  skipped = state_lib.apply_gradients(state, grads, tx, 0.9, jax.numpy.array(False))
  assert int(skipped.step) == 1 and int(skipped.skipped) == 1
  np.testing.assert_array_equal(skipped.params["w"], state.params["w"])
  np.testing.assert_array_equal(skipped.opt_state[1][0].mu["w"], np.zeros(3))
  applied = state_lib.apply_gradients(state, {"w": jax.numpy.ones(3)}, tx, 0.9,
                                      jax.numpy.array(True))
  assert int(applied.skipped) == 0 and not np.array_equal(applied.params["w"], state.params["w"])


def test_bad_config_is_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "tip_jax.main", f"--config={CONFIG_FILE}:tiny",
                         "--config.batch_size=7", f"--workdir={tmp_path}"],
                        env=subprocess_env(), capture_output=True, text=True, timeout=300,
                        cwd=ROOT)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  assert "batch_size 7 is not divisible" in proc.stderr.strip().splitlines()[-1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_a_sharded_mesh_match_one_device(tmp_path, monkeypatch):
  """2 processes x 2 devices (jax.distributed, gloo) on a data=2 x fsdp=2 mesh, 2 steps:
  both hold the same params, within 1e-5 of one process on one device accumulating two
  micro-batches of 4 fed both processes' rows (seen ~2e-7). One test for multi-host
  data loading, FSDP-sharded params and gradient accumulation: each of them alone would
  compile and run the same tiny training again."""
  port = _free_port()
  flags = flags_for(**{"total_steps": 2, "mesh.fsdp": 2})
  procs = [subprocess.Popen(
      [sys.executable, str(WORKER), *flags,
       f"--workdir={tmp_path / 'two'}", "--distributed", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}", f"--dump_params={tmp_path / 'params'}"],
      env=subprocess_env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  two = [dict(np.load(tmp_path / f"params.{i}.npz")) for i in range(2)]
  assert all(np.array_equal(two[0][k], two[1][k]) for k in two[0])

  # One device, each step's global batch = process 0's rows + process 1's, in two halves.
  make_iterator = setup_lib.data_lib.make_iterator

  def both_shards(*args, batch_size, **kwargs):
    shards = [make_iterator(*args, batch_size=batch_size // 2, process_index=i,
                            process_count=2, **kwargs) for i in range(2)]
    while True:
      parts = [next(s) for s in shards]
      yield jax.tree.map(lambda *x: np.concatenate(x), *parts)

  monkeypatch.setattr(setup_lib.data_lib, "make_iterator", both_shards)
  monkeypatch.setattr(checkpoint, "save", lambda *args, **kwargs: True)
  one = train_on_one_device(tmp_path / "one", total_steps=2, grad_accum_steps=2)
  ref = {"/".join(k): v for k, v in params_of(one).items()}
  assert max_diff(ref, two[0]) < 1e-5


@pytest.mark.parametrize("arg", ["tiny", "sd15", "sd21", "sd15,controlnet_sr", "no_params",
                                 "tiny,modulate_up"])
def test_every_config_builds_its_models(arg):
  """Each config (and ablation) gives abstract models whose ControlNet matches its fusion."""
  from tip_jax.experiment import components
  c = load_config(f"{CONFIG_FILE}:{arg}", {"model.backbone": "random"})
  comps = components.build(c, abstract=True)
  assert comps.controlnet.config.fusion == c.model.fusion
  assert comps.backbone.prediction_type == ("v_prediction" if arg == "sd21" else "epsilon")
  assert components.degrade_config(c).size == (c.data.resolution,) * 2
  if "controlnet_sr" in arg:
    assert c.model.fusion == "additive" and not c.prompts.semantic and not c.prompts.restoration
  if "no_params" in arg:
    assert components.degrade_config(c).tip.with_values_prob == 0.0


def test_a_random_backbone_must_be_asked_for():
  from tip_jax.experiment import components
  with pytest.raises(ConfigError, match="model.backbone is not set"):
    components.build(load_config(f"{CONFIG_FILE}:sd15"), abstract=True)


def test_unknown_config_part_is_refused():
  with pytest.raises(ConfigError, match="unknown config part"):
    load_config(f"{CONFIG_FILE}:sd15,typo")


def test_hparams_keep_every_nested_field_and_sigterm_handler_is_restored():
  hparams = trainer.flat_hparams(tiny_config())
  assert hparams["optim.lr"] == 1e-3 and hparams["model.geometry"] == "tiny"
  assert hparams["mesh.data"] == -1 and hparams["data.source"] == "demo:train+extra"
  before = signal.getsignal(signal.SIGTERM)
  with trainer._StopFlag():
    assert signal.getsignal(signal.SIGTERM) != before
  assert signal.getsignal(signal.SIGTERM) == before


def test_a_controlnet_sr_checkpoint_restores_without_prompts(tmp_path):
  """The ControlNet-SR ablation never saw a prompt: restoring from its checkpoint gives
  the model "" whatever the user passes."""
  from tip_jax.restore import TIPRestorer
  config = load_config(f"{CONFIG_FILE}:tiny,controlnet_sr", {**OVERRIDES, "total_steps": 1})
  train_on_one_device(tmp_path, config)
  restorer = TIPRestorer.from_checkpoint(str(tmp_path))
  assert not restorer.uses_semantic and not restorer.uses_restoration
  assert restorer.controlnet.config.fusion == "additive"
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  typed = restorer.restore(image, "a zebra", "Deblur with sigma 2.0;", steps=2, seed=0)
  np.testing.assert_array_equal(typed, restorer.restore(image, "", "", steps=2, seed=0))

"""`python -m launch.xm_launch`: its dry run needs neither xmanager nor JAX nor a cloud;
launching needs xmanager (its own venv, see launch/requirements.txt), and where it is
installed the experiment's jobs are run against stand-ins for gcloud and the TPU VMs."""

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures.launch import ROOT, parse_dry_run, records, stand_in_cloud, tip_train_args
from tip_jax.experiment.config import load_config


def _launch(env, *args):
  return subprocess.run([sys.executable, "-m", "launch.xm_launch", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_dry_run_shows_a_work_unit_per_seed_each_a_trainer_and_its_evaluator(tmp_path):
  env = stand_in_cloud(tmp_path, {})
  proc = _launch(env, "--config=configs/tip.py:sd15,no_params", "--workdir=gs://b/seeds",
                 "--topology=v5p-64", "--tpu=p0,p1,p2", "--eval_tpu=e0,e1,e2",
                 "--sweep=sweep_seeds", "--title=seeds", "--dry_run", "--",
                 "--config.model.backbone=/data/sd15")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("# xmanager experiment 'seeds': ")
  plan = parse_dry_run(proc.stdout)
  assert "v5p-64 (32 chips, 2x4x4, 8 hosts; gcloud type v5p-64)" in plan["header"]
  assert [c[5] for c in plan["checks"]] == ["p0", "p1", "p2"]  # the trainers' VMs
  assert list(plan["units"]) == ["1_seed=0", "2_seed=1", "3_seed=2"]
  for seed, unit in enumerate(plan["units"].values()):
    (t_where, t_argv), (e_where, e_argv) = unit["jobs"]["trainer"], unit["jobs"]["evaluator"]
    assert (t_where, e_where) == (f"p{seed}", f"e{seed}")
    trainer, evaluator = tip_train_args(t_argv), tip_train_args(e_argv)
    assert trainer[1:] == evaluator[1:] and trainer[-1] == "--distributed"
    assert trainer[1:5] == ["--config=configs/tip.py:sd15,no_params",
                            f"--workdir=gs://b/seeds/{seed + 1}_seed={seed}",
                            f"--config.seed={seed}", "--config.model.backbone=/data/sd15"]


def test_launching_without_xmanager_is_one_line(tmp_path):
  env = stand_in_cloud(tmp_path, {"pod": "v5litepod-16"})  # blocks `import xmanager`
  proc = _launch(env, "--config=configs/tip.py:tiny", "--workdir=/tmp/w", "--topology=v5e-16",
                 "--tpu=pod", f"--local_python={tmp_path}/bin/python")
  assert proc.returncode == 1
  assert proc.stderr.splitlines()[-1].startswith(
      "python -m launch.xm_launch: xmanager is not installed: pip install -r "
      "launch/requirements.txt")
  assert not records(tmp_path, "records.jsonl")  # no job started


def test_the_experiment_runs_both_jobs_of_each_work_unit(tmp_path):
  pytest.importorskip("xmanager", reason="xmanager lives in the launcher's own venv")
  env = stand_in_cloud(tmp_path, {"a": "v4-8"}, workers=2)
  env["PYTHONPATH"] = env["PYTHONPATH"].replace(f"{tmp_path}/blocked/xmanager", "")  # JAX stays out
  env["HOME"] = str(tmp_path)    # xmanager's experiment database
  proc = _launch(env, "--config=configs/tip.py:tiny", f"--workdir={tmp_path}/w",
                 "--topology=v4-8", "--tpu=a", "--remote_python=python",
                 f"--local_python={tmp_path}/bin/python", "--", "--config.total_steps=4")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  jobs = records(tmp_path, "records.jsonl")
  assert sorted((j["mode"], j["worker"]) for j in jobs) == [
      ("eval", None), ("train", "0"), ("train", "1")]
  expected = json.loads(json.dumps(load_config("configs/tip.py:tiny",
                                               {"total_steps": 4}).to_dict()))
  assert all(j["config"] == expected and j["workdir"] == f"{tmp_path}/w" for j in jobs)
  assert os.path.isdir(tmp_path / ".xmanager")

"""`python -m launch.tpu_vm`, run as a user runs it, without JAX or xmanager importable:
its dry run, and a launch against stand-ins for gcloud and the TPU VMs' Python."""

import json
import subprocess
import sys
import time

from tests.fixtures.launch import ROOT, parse_dry_run, records, stand_in_cloud, tip_train_args
from tip_jax.experiment.config import load_config

TINY = ["--config.total_steps=4", "--config.model.backbone=random"]


def _launch(env, *args):
  return subprocess.run([sys.executable, "-m", "launch.tpu_vm", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_dry_run_shows_both_jobs_of_every_sweep_point(tmp_path):
  env = stand_in_cloud(tmp_path, {})
  proc = _launch(env, "--config=configs/tip.py:sd15", "--workdir=gs://bucket/ablations",
                 "--topology=v4-32", "--tpu=a,b,c,d", "--zone=us-central2-b", "--sweep=sweep",
                 "--dry_run", "--", "--config.model.backbone=/data/sd15")
  assert proc.returncode == 0, proc.stderr
  plan = parse_dry_run(proc.stdout)
  assert "v4-32 (16 chips, 2x2x4, 4 hosts; gcloud type v4-32)" in plan["header"]
  assert [c[-1] for c in plan["checks"][:4]] == ["--format=value(acceleratorType)"] * 4
  assert list(plan["units"]) == ["1_base", "2_controlnet_sr", "3_no_params", "4_modulate_up"]
  for (name, unit), tpu in zip(plan["units"].items(), "abcd"):
    assert set(unit["jobs"]) == {"trainer", "evaluator"}
    (t_where, t_argv), (e_where, e_argv) = unit["jobs"]["trainer"], unit["jobs"]["evaluator"]
    assert (t_where, e_where) == (tpu, "this host")
    assert t_argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu]
    assert "--worker=all" in t_argv
    trainer, evaluator = tip_train_args(t_argv), tip_train_args(e_argv)
    assert trainer == ["--mode=train", *evaluator[1:], "--distributed"]
    assert f"--workdir=gs://bucket/ablations/{name}" in evaluator
    assert unit["workdir"] == f"gs://bucket/ablations/{name}"
  assert not (tmp_path / "gcloud.jsonl").exists()  # a dry run calls nothing


def test_the_trainer_runs_on_every_worker_and_the_evaluator_here(tmp_path):
  env = stand_in_cloud(tmp_path, {"pod": "v5litepod-16"}, workers=4)
  workdir = str(tmp_path / "shared")
  proc = _launch(env, "--config=configs/tip.py:tiny", f"--workdir={workdir}",
                 "--topology=v5e-16", "--tpu=pod", "--remote_python=python",
                 f"--local_python={tmp_path}/bin/python", "--", *TINY)
  assert proc.returncode == 0, proc.stderr
  calls = records(tmp_path, "gcloud.jsonl")
  assert [c[3:5] for c in calls] == [["describe", "pod"], ["ssh", "pod"]]
  jobs = records(tmp_path, "records.jsonl")
  trainers = sorted((j for j in jobs if j["mode"] == "train"), key=lambda j: j["worker"])
  [evaluator] = [j for j in jobs if j["mode"] == "eval"]
  assert [t["worker"] for t in trainers] == ["0", "1", "2", "3"]
  assert all(t["distributed"] and t["tpu"] == "pod" for t in trainers)
  assert evaluator["worker"] is None and not evaluator["distributed"]
  expected = json.loads(json.dumps(load_config(
      "configs/tip.py:tiny", {"total_steps": 4, "model.backbone": "random"}).to_dict()))
  for job in trainers + [evaluator]:
    assert job["workdir"] == workdir and job["config"] == expected
    assert job["checkout"] == str(ROOT)  # the workers' ~/tip_jax, here a link to it
  # Every job's output, named.
  assert proc.stdout.count("[base trainer] stand-in tip-train --mode=train") == 4
  assert proc.stdout.count("[base evaluator] stand-in tip-train --mode=eval") == 1
  assert proc.stdout.endswith("2 jobs of 1 work unit(s) finished\n")


def test_a_vm_of_another_slice_stops_the_launch(tmp_path):
  env = stand_in_cloud(tmp_path, {"pod": "v4-8"})
  proc = _launch(env, "--config=configs/tip.py:tiny", "--workdir=/tmp/w", "--topology=v4-32",
                 "--tpu=pod")
  assert proc.returncode == 1
  assert proc.stderr.splitlines()[-1] == ("python -m launch.tpu_vm: TPU VM pod is a v4-32: "
                                          "its accelerator type is v4-8, not v4-32")
  assert [c[3] for c in records(tmp_path, "gcloud.jsonl")] == ["describe"]  # nothing ran


def test_a_failed_trainer_stops_its_evaluator(tmp_path):
  env = {**stand_in_cloud(tmp_path, {"pod": "v5litepod-16"}, workers=2),
         "STAND_IN_FAILS": "train"}
  start = time.monotonic()
  proc = _launch(env, "--config=configs/tip.py:tiny", "--workdir=/tmp/w", "--topology=v5e-16",
                 "--tpu=pod", "--remote_python=python", f"--local_python={tmp_path}/bin/python")
  assert proc.returncode == 1 and time.monotonic() - start < 60  # the evaluator would wait 120 s
  assert proc.stderr.splitlines()[-1] == (
      "python -m launch.tpu_vm: failed: the trainer of work unit base (exit 3); the other "
      "job of its work unit was stopped")

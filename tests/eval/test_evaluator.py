"""The evaluator job beside a live tiny training run: every checkpoint scored exactly
once, a SIGKILLed evaluator resumes without repeating finished work, and it stops after
the trainer's final checkpoint."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.fixtures.checkpoint import tiny_checkpoint  # noqa: F401  (a fixture)
from tests.train.test_trainer import ROOT, flags_for, subprocess_env, tiny_config
from tip_jax.eval import evaluator

# Small enough for CI: 4 embedded crops of 32², 2 sampler steps, pixel + LPIPS metrics.
EVAL_OVERRIDES = {"evals.embedded_count": 4, "evals.steps": 2, "evals.batch_size": 4,
                  "evals.metrics": "psnr,ssim,lpips", "evals.poll_s": 0.5,
                  "evals.num_grid": 2}
PARTS = re.compile(r"step (\d+): (\S+/\S+) \(")


def _start(args, log_path, mode="train"):
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, "-m", "tip_jax.main", f"--mode={mode}", *args,
                           "--alsologtostderr"],
                          env=subprocess_env(devices=1), stdout=log, stderr=log, cwd=ROOT)


def _state(workdir):
  path = workdir / "eval" / "state.json"
  return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.slow
def test_evaluator_follows_training_once_per_checkpoint_across_a_sigkill(tmp_path):
  workdir = tmp_path / "run"
  args = flags_for(total_steps=4, checkpoint_every_steps=2, **EVAL_OVERRIDES) + [
      f"--workdir={workdir}"]
  trainer = _start(args, tmp_path / "train.log")
  first = _start(args, tmp_path / "eval1.log", mode="eval")
  deadline = time.time() + 900
  # Kill the evaluator once it has finished part of a checkpoint.
  while not _state(workdir).get("results"):
    assert first.poll() is None, (tmp_path / "eval1.log").read_text()[-3000:]
    assert time.time() < deadline
    time.sleep(0.2)
  first.send_signal(signal.SIGKILL)
  first.wait(timeout=60)
  done_before = {(int(s), k) for s, parts in _state(workdir)["results"].items() for k in parts}

  second = _start(args, tmp_path / "eval2.log", mode="eval")
  assert trainer.wait(timeout=900) == 0, (tmp_path / "train.log").read_text()[-3000:]
  assert second.wait(timeout=900) == 0, (tmp_path / "eval2.log").read_text()[-3000:]

  state = _state(workdir)
  assert state["complete"] == [2, 4] and state["skipped"] == []
  modes = sorted(tiny_config().evals.modes)
  sets = ("embedded_param_32", "embedded_realesrgan_32")
  for step in ("2", "4"):
    assert set(state["results"][step]) == {f"{s}/{m}" for s in sets for m in modes}
    for result in state["results"][step].values():
      assert set(result) == {"psnr", "ssim", "lpips"} and result["psnr"]["count"] == 4
    table = (workdir / "eval" / f"step_{int(step):07d}" / "results.md").read_text()
    for name in sets:
      assert table.count(f"| {name} |") == len(modes) + 1  # + the degraded input
  # Nothing finished before the kill was scored again; everything was scored once after.
  scored_again = [(int(s), k) for s, k in PARTS.findall((tmp_path / "eval2.log").read_text())]
  assert not set(scored_again) & done_before
  assert len(scored_again) == len(set(scored_again))


def test_a_checkpoint_deleted_before_it_is_read_is_skipped(
    tiny_checkpoint, tmp_path):  # noqa: F811
  # The session's 2-step run (its one checkpoint: step 2), scored in a copy of its workdir.
  workdir = shutil.copytree(tiny_checkpoint, tmp_path / "run")
  # Batches of 3 for 4 images: the last is padded to 3 and cut back to 1. Two of the
  # config's modes, one with sampler options (the SIGKILL test above scores them all).
  config = tiny_config(total_steps=2, **{
      **EVAL_OVERRIDES, "evals.batch_size": 3, "evals.val_source": "demo",
      "evals.val_batches": 2,
      "evals.modes": {"full": ("caption", "values"),
                      "blind_1step_wavelet": ("", "blind", "steps=1,color_fix=wavelet")}})
  job = evaluator.Evaluator(config, str(workdir))
  assert job.evaluate(4) is None           # never written (or already collected)
  assert job.state.skipped == [4]
  results = job.evaluate(2)
  assert results["embedded_param_32/full"]["lpips"]["count"] == 4
  # The validation loss: the trainer's loss_fn on fixed held-out batches, same each time.
  loss = results["validation"]["loss"]["mean"]
  assert np.isfinite(loss) and loss > 0
  assert job.validation(job._params(2)) == loss
  assert evaluator.State(job.state.path).complete == [2]

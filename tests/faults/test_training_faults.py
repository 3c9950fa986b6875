"""Faults a training job must survive (README "When things go wrong"), injected into
tiny runs (32² crops, 9 steps, checkpoints at 3, 6, 9) by tests/fixtures/train_worker.py:
each one stops with one line or none, keeps what was saved, and a restart ends
bitwise where an uninterrupted run does. Runs with a data worker also show that no
shared memory is left behind (Python's "leaked shared_memory" warning).
"""

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import grain
import jax
import numpy as np
import pytest

from tests.fixtures.checkpoint import STRAIGHT_STEPS, cut_array_data
from tests.fixtures.checkpoint import straight  # noqa: F401  (a fixture)
from tests.train.test_trainer import (ROOT, WORKER, flags_for, params_of, subprocess_env,
                                      tiny_config, train_on_one_device)
from tip_jax.errors import CheckpointError, TrainingError
from tip_jax.eval import evaluator
from tip_jax.experiment import setup as setup_lib
from tip_jax.image_io import write_png
from tip_jax.restore import TIPRestorer
from tip_jax.train import trainer

STEPS = {"total_steps": STRAIGHT_STEPS}
WORKERS = {**STEPS, "data.num_workers": 1}  # one Grain worker: the same batches as none


def _same(params, straight_params):
  assert params.keys() == straight_params.keys()
  assert all(np.array_equal(params[k], straight_params[k]) for k in params)


def _worker(workdir, *faults, new_session=False, **overrides):
  return subprocess.run([sys.executable, str(WORKER),
                         *flags_for(**{**WORKERS, **overrides}), f"--workdir={workdir}",
                         "--devices=1", *faults], env=subprocess_env(), capture_output=True,
                        text=True, timeout=600, cwd=ROOT, start_new_session=new_session)


def _clean(stderr):
  """No traceback from anything (worker processes included), no shared memory left."""
  assert "Traceback" not in stderr, stderr[-3000:]
  assert "leaked" not in stderr, stderr[-3000:]


def _last_line(stderr):
  return stderr.strip().splitlines()[-1]


def _folders(workdir):
  return sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.is_dir())


def _damaged_copy(straight, tmp_path):
  """The straight run with step 9's array data cut in half."""
  workdir = tmp_path / "damaged"
  shutil.copytree(straight[0], workdir)
  (workdir / "checkpoints" / "train_complete").unlink()
  cut_array_data(workdir / "checkpoints" / "9")
  return workdir


def test_a_damaged_newest_checkpoint(straight, tmp_path, caplog):  # noqa: F811
  """The restorer stops with one line naming it; the evaluator skips it; the trainer
  sets it aside, resumes from step 6 and ends bitwise equal."""
  workdir = _damaged_copy(straight, tmp_path)
  with pytest.raises(CheckpointError) as e:
    TIPRestorer.from_checkpoint(str(workdir))
  assert re.fullmatch(rf"checkpoint step 9 in {workdir}/checkpoints cannot be read: "
                      r"ema_params/ array \S+ \(OUT_OF_RANGE: .+\)", str(e.value)), str(e.value)

  job = evaluator.Evaluator(tiny_config(**STEPS, **{"evals.metrics": "psnr",
                                                    "evals.embedded_count": 2}), str(workdir))
  assert job.evaluate(9) is None and job.state.skipped == [9]

  caplog.clear()
  caplog.set_level(logging.INFO, logger="absl")  # absl's own level may be WARNING by now
  state = train_on_one_device(workdir, **STEPS)
  _same(params_of(state), straight[1])
  assert "checkpoint step 9" in caplog.text and "moved to 9.corrupt; trying step 6" in caplog.text
  assert "resuming from step 6" in caplog.text
  assert _folders(workdir) == ["3", "6", "9", "9.corrupt"]


@pytest.mark.slow
def test_tip_restore_on_a_damaged_checkpoint_is_one_line(straight, tmp_path):  # noqa: F811
  workdir = _damaged_copy(straight, tmp_path)
  image = tmp_path / "in.png"
  write_png(np.zeros((32, 32, 3), np.uint8), str(image))
  proc = subprocess.run([sys.executable, "-m", "tip_jax.cli.restore", str(image),
                         f"--checkpoint={workdir}", f"--out={tmp_path / 'out'}", "--steps=2"],
                        env=subprocess_env(devices=1), capture_output=True, text=True,
                        timeout=300, cwd=ROOT)
  assert proc.returncode == 1
  _clean(proc.stderr)
  # The one line is all: no library INFO logs (Orbax's, the backbone loader's) before it.
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(
      f"tip-restore: cannot load checkpoint {workdir}: checkpoint step 9 in "
      f"{workdir}/checkpoints cannot be read: ema_params/ array ")


@pytest.mark.slow
def test_a_refused_write_stops_with_one_line_and_keeps_the_earlier_checkpoint(tmp_path):
  """Writes fail from step 6's async save on (as on a full disk): one line, exit 1, step
  3 kept (even with keep_checkpoints=1) beside the unfinished folder. That is the state
  a SIGKILL during step 6's save leaves, whose restart test_sigkill_during_a_save runs."""
  workdir = tmp_path / "run"
  proc = _worker(workdir, "--refuse_writes_at_save=6", keep_checkpoints=1)
  assert proc.returncode == 1, proc.stderr[-3000:]
  _clean(proc.stderr)
  assert re.fullmatch(rf"tip-train: checkpoint save at step 6 failed: file too large in "
                      rf"{workdir}/checkpoints \(a checkpoint here takes ~\d+(\.\d)? MB\)",
                      _last_line(proc.stderr)), _last_line(proc.stderr)
  assert _folders(workdir) == ["3", "6.orbax-checkpoint-tmp"]


@pytest.mark.slow
def test_a_dying_data_worker_stops_with_one_line_and_the_restart_is_exact(
    straight, tmp_path, caplog):  # noqa: F811
  workdir = tmp_path / "run"
  proc = _worker(workdir, "--kill_data_worker_at=2")
  ended = time.time()
  assert proc.returncode == 1, proc.stderr[-3000:]
  _clean(proc.stderr)
  assert _last_line(proc.stderr) == ("tip-train: a data worker process died (killed by "
                                     "SIGKILL: out of memory?); the input pipeline cannot "
                                     "go on without it")
  killed_at = float(re.search(r"killed data worker \d+ at ([\d.]+)", proc.stderr).group(1))
  assert ended - killed_at < 60  # noticed within a second; the rest is shutting down

  caplog.set_level(logging.INFO, logger="absl")  # absl's own level may be WARNING by now
  _same(params_of(train_on_one_device(workdir, **WORKERS)), straight[1])
  assert re.search(r"resuming from step [36] ", caplog.text)


@pytest.mark.slow
def test_sigterm_during_an_async_save(straight, tmp_path):  # noqa: F811
  """SIGTERM to the process group (the trainer and its data worker) while step 3's save
  is in flight: that save lands, the current step is saved, exit 0; resume is exact."""
  workdir = tmp_path / "run"
  proc = _worker(workdir, "--sigterm_during_save=3", new_session=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _clean(proc.stderr)
  stopped = int(re.search(r"stopping at step (\d+) \(checkpoint saved\)", proc.stderr).group(1))
  assert 3 < stopped < 9
  assert _folders(workdir) == sorted({"3", str(stopped)} | ({"6"} if stopped > 6 else set()))
  _same(params_of(train_on_one_device(workdir, **WORKERS)), straight[1])


@pytest.mark.slow
def test_sigkill_during_a_save(straight, tmp_path, caplog):  # noqa: F811
  """SIGKILL while step 6 is being saved: the unfinished folder is removed at restart,
  which resumes from step 3 and ends bitwise equal; the data worker does not outlive
  its trainer."""
  workdir = tmp_path / "run"
  proc = _worker(workdir, "--kill_during_save=6")
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert _folders(workdir) == ["3", "6.orbax-checkpoint-tmp"]
  pids = [int(p) for p in re.search(r"data workers: ([\d ]+)", proc.stderr).group(1).split()]
  deadline = time.time() + 30
  while any(_alive(pid) for pid in pids):
    assert time.time() < deadline, f"orphaned data workers {pids}"
    time.sleep(0.5)

  caplog.set_level(logging.INFO, logger="absl")  # absl's own level may be WARNING by now
  state = train_on_one_device(workdir, **WORKERS)
  _same(params_of(state), straight[1])
  assert "6.orbax-checkpoint-tmp: a checkpoint save that never completed" in caplog.text
  assert "resuming from step 3" in caplog.text


def _alive(pid):
  """True while `pid` runs (a zombie waiting for its reaper does not count)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def test_a_stuck_run_stops_with_one_line(tmp_path, monkeypatch):
  """From the 4th batch on every degradation parameter is NaN, so every step is
  non-finite: more than max_consecutive_skips=2 in a row stop the run at step 6, before
  its save; step 3's checkpoint stays. (Poisoned on the host: the step the other runs
  compiled is the one that runs.)"""
  make_iterator = setup_lib.data_lib.make_iterator

  class PoisonedFromBatch4(grain.DatasetIterator):
    """The pipeline's iterator (its state checkpointed as usual), NaN from batch 4."""

    def __init__(self, parent):
      super().__init__(parent)
      self.count = 0

    def __next__(self):
      batch = next(self._parent)
      self.count += 1
      if self.count > 3:
        batch["degrade"] = jax.tree.map(
            lambda x: np.full_like(x, np.nan) if np.issubdtype(x.dtype, np.floating) else x,
            batch["degrade"])
      return batch

    def get_state(self):
      return self._parent.get_state()

    def set_state(self, state):
      self._parent.set_state(state)

  monkeypatch.setattr(setup_lib.data_lib, "make_iterator",
                      lambda *a, **k: PoisonedFromBatch4(make_iterator(*a, **k)))
  with pytest.raises(TrainingError) as e:
    train_on_one_device(tmp_path, **STEPS, max_consecutive_skips=2)
  assert str(e.value) == (
      "steps 4-6: 3 steps in a row had a non-finite loss or gradient "
      "(max_consecutive_skips=2); the run is stuck: lower optim.lr or check the data "
      "(checkpoint step 3 is kept)")
  assert _folders(tmp_path) == ["3"]


def test_a_full_disk_outside_a_save_is_one_line(tmp_path, monkeypatch):
  """The disk fills up while a sample grid is written (before any checkpoint): one line
  naming the workdir and the reason, no OSError traceback."""

  class FullDisk:
    def __init__(self, exp, writer):
      del exp, writer

    def __call__(self, step, ema_params):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setitem(trainer.samples.GRIDS, "tip", FullDisk)
  with pytest.raises(TrainingError) as e:
    train_on_one_device(tmp_path, total_steps=1, sample_every_steps=1)
  assert str(e.value) == f"a write in {tmp_path} failed: no space left on device"
  assert _folders(tmp_path) == []

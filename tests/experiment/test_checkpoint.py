"""Per-role checkpoint items and the new-checkpoint iterator an evaluator polls with.

(The trainer tests cover save/restore of a whole run and `runs.load_for_inference` on it.)
"""

import threading
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tip_jax.errors import CheckpointError
from tip_jax.experiment import checkpoint, runs


def _save_params(mngr, step):
  mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave({"w": np.full(3, step, np.float32)})), force=True)
  mngr.wait_until_finished()


def test_checkpoints_follows_a_run_until_train_complete(tmp_path):
  workdir = str(tmp_path)
  mngr = checkpoint.manager(workdir)
  _save_params(mngr, 1)
  seen = []

  def trainer():
    for step in (2, 3):
      time.sleep(0.3)
      _save_params(mngr, step)
    checkpoint.mark_complete(workdir, 3)

  thread = threading.Thread(target=trainer)
  thread.start()
  for step in checkpoint.checkpoints(workdir, poll_s=0.05, timeout_s=60):
    seen.append(step)
  thread.join()
  assert seen == [1, 2, 3]
  # A second evaluator that already did step 2 only gets step 3, and stops at once.
  assert list(checkpoint.checkpoints(workdir, after_step=2, poll_s=0.05)) == [3]


def test_checkpoints_stops_after_the_timeout(tmp_path):
  start = time.monotonic()
  assert list(checkpoint.checkpoints(str(tmp_path), poll_s=0.05, timeout_s=0.3)) == []
  assert time.monotonic() - start < 10


def test_a_missing_or_old_checkpoint_is_one_error(tmp_path):
  with pytest.raises(CheckpointError, match="no such checkpoint folder"):
    runs.load_for_inference(str(tmp_path / "nowhere"))
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(CheckpointError, match="no TIP checkpoints"):
    runs.load_for_inference(str(tmp_path))

"""Per-role checkpoint items, the new-checkpoint iterator an evaluator polls with, and
what inference reads from a finished run.

(The fault tests cover save/restore of whole runs: every restart there ends bitwise where
the uninterrupted run does.)
"""

import threading
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax.traverse_util import flatten_dict

from tests.fixtures.checkpoint import STRAIGHT_STEPS
from tests.fixtures.checkpoint import straight  # noqa: F401  (a fixture)
from tip_jax.errors import CheckpointError
from tip_jax.experiment import checkpoint, runs
from tip_jax.restore import TIPRestorer


def test_a_finished_run_holds_what_inference_needs(straight):  # noqa: F811
  """The checkpoint alone gives inference its model: EMA params, config, backbone; and
  `TIPRestorer.from_checkpoint` restores with it (any size: 40x24 is padded)."""
  workdir, _, ema = straight
  assert checkpoint.is_complete(str(workdir))
  items = {p.name for p in (workdir / "checkpoints" / str(STRAIGHT_STEPS)).iterdir()
           if p.is_dir()}
  assert items == {"params", "ema_params", "opt_state", "data", "config"}
  trained = runs.load_for_inference(str(workdir))
  assert trained.step == STRAIGHT_STEPS and trained.resolution == 32
  got = flatten_dict(trained.controlnet_params)
  assert got.keys() == ema.keys() and all(np.array_equal(ema[k], np.asarray(got[k])) for k in ema)

  restorer = TIPRestorer.from_checkpoint(str(workdir))
  image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
  out = restorer.restore(image, "a photo", "Deblur with sigma 2.0;", steps=2, seed=0)
  assert out.shape == (24, 40, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, restorer.restore(image, "a photo", "Deblur with sigma 2.0;",
                                                      steps=2, seed=0))


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

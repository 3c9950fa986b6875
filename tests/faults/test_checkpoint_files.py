"""Damaged, missing and unfinished checkpoint files, on small real Orbax checkpoints:
each kind of damage is named (step and file), the newest readable step is used, the
bad one set aside; what is not damage (a checkpoint that does not match) is not blamed."""

import errno
import logging
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tip_jax.errors import CheckpointError
from tip_jax.experiment import checkpoint
from tip_jax.experiment import checkpoint_files as files

ITEMS = ("params", "config")


def _save(mngr, step):
  mngr.save(step, force=True, args=ocp.args.Composite(
      params=ocp.args.StandardSave({"w": np.full(8192, step, np.float32)}),
      config=ocp.args.JsonSave({"step": step})))
  mngr.wait_until_finished()


@pytest.fixture
def two_steps(tmp_path):
  mngr = checkpoint.manager(str(tmp_path))
  for step in (1, 2):
    _save(mngr, step)
  return mngr, tmp_path / "checkpoints"


def _read(mngr, shape=8192):
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = {"w": jax.ShapeDtypeStruct((shape,), np.float32, sharding=device)}
  return lambda step: mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore()))


def _cut(path):
  os.truncate(path, os.path.getsize(path) // 2)


def _data_files(item):
  return [p for p in item.rglob("*") if p.is_file() and p.parent.name == "d"]


DAMAGE = {  # what is done to step 2 -> how the message starts, what else it says
    "data cut short": (lambda s: [_cut(p) for p in _data_files(s / "params")],
                       "params/", "(OUT_OF_RANGE: "),
    "data garbled": (lambda s: [p.write_bytes(b"\0" * p.stat().st_size)
                                for p in _data_files(s / "params")], "params/", ": "),
    "manifest cut short": (lambda s: _cut(s / "params" / "manifest.ocdbt"),
                           "params/manifest.ocdbt (DATA_LOSS: ", "manifest"),
    "metadata cut short": (lambda s: _cut(s / "params" / "_METADATA"),
                           "params/_METADATA (", "string"),
    "config cut short": (lambda s: _cut(s / "config" / "metadata"), "config/metadata (", "("),
    "item missing": (lambda s: shutil.rmtree(s / "params"), "params/ (missing", "missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_named_and_the_newest_readable_step_is_used(two_steps, damage, caplog):
  mngr, root = two_steps
  harm, starts, says = DAMAGE[damage]
  harm(root / "2")
  head = f"checkpoint step 2 in {root} cannot be read: {starts}"

  with pytest.raises(CheckpointError) as e:  # the restorer's way: stop, one line
    checkpoint.read_newest(mngr, _read(mngr), items=ITEMS, fall_back=False)
  assert str(e.value).startswith(head) and says in str(e.value), str(e.value)
  assert "\n" not in str(e.value)

  with caplog.at_level(logging.WARNING):  # the trainer's way: set aside, fall back
    step, restored = checkpoint.read_newest(mngr, _read(mngr), items=ITEMS, fall_back=True,
                                            set_aside=True)
  assert step == 1 and restored["config"] == {"step": 1}
  np.testing.assert_array_equal(restored["params"]["w"], np.full(8192, 1, np.float32))
  warned = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
  assert len(warned) == 1 and warned[0].startswith(head)
  assert warned[0].endswith("; moved to 2.corrupt; trying step 1")
  assert sorted(p.name for p in root.iterdir()) == ["1", "2.corrupt"]
  assert mngr.all_steps() == [1]


def test_a_checkpoint_that_does_not_match_is_not_blamed(two_steps):
  """Other shapes than the model's: the error is the caller's, every step stays."""
  mngr, root = two_steps
  with pytest.raises(ValueError, match="not compatible with the stored shape"):
    checkpoint.read_newest(mngr, _read(mngr, shape=16), items=ITEMS, fall_back=True,
                           set_aside=True)
  assert sorted(p.name for p in root.iterdir()) == ["1", "2"]


def test_a_step_deleted_before_it_is_read_is_skipped(two_steps, caplog):
  mngr, _ = two_steps
  with caplog.at_level(logging.WARNING):
    assert checkpoint.read_newest(mngr, _read(mngr), [5], ITEMS, fall_back=True) is None
  assert "checkpoint step 5" in caplog.text and "folder is gone" in caplog.text


def test_unfinished_saves_are_removed_when_a_trainer_opens_the_folder(tmp_path, caplog):
  unfinished = tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp" / "params"
  unfinished.mkdir(parents=True)
  (unfinished / "half_written").write_bytes(b"x")
  checkpoint.manager(str(tmp_path), read_only=True)  # an evaluator leaves it alone
  assert unfinished.exists()
  with caplog.at_level(logging.WARNING):
    checkpoint.manager(str(tmp_path))
  assert not unfinished.parent.exists()
  assert "removing" in caplog.text and "7.orbax-checkpoint-tmp" in caplog.text


def test_refused_writes_are_named_and_other_errors_are_not():
  assert files.write_failure(OSError(errno.ENOSPC, "No space left on device")) == \
      "no space left on device"
  wrapped = RuntimeError("save failed")
  wrapped.__cause__ = ValueError("PERMISSION_DENIED: Failed to open \"/x\" [os_error_code=13]")
  assert files.write_failure(wrapped) == "permission denied"
  assert files.write_failure(ValueError("Requested shape: (3,) is not compatible")) is None
  assert files.size_text(17_025_000) == "~17 MB" and files.size_text(3.2e9) == "~3.2 GB"

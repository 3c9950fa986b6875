"""The restricted unpickler reads numpy weight pickles and refuses anything else."""

import os
import pickle

import numpy as np
import pytest

from tip_jax import unpickle
from tip_jax.errors import CheckpointError


class _Exploit:

  def __reduce__(self):
    return (os.system, ("true",))


def test_reads_nested_numpy_dicts():
  tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [np.int64(3)]}
  out = unpickle.load(pickle.dumps(tree))
  np.testing.assert_array_equal(out["a"]["kernel"], tree["a"]["kernel"])
  assert out["b"][0] == 3


def test_refuses_other_globals(tmp_path):
  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps(_Exploit()))
  with pytest.raises(CheckpointError, match=r"evil.ckpt: refusing to unpickle posix.system"):
    unpickle.load(str(path))


def test_missing_and_garbage_files_are_one_line(tmp_path):
  with pytest.raises(CheckpointError, match="cannot read"):
    unpickle.load(str(tmp_path / "absent.ckpt"))
  with pytest.raises(CheckpointError, match="not a readable weight pickle"):
    unpickle.load(b"\x80\x04garbage")

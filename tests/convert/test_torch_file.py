"""`.pth` files read without torch equal `torch.load`, in both torch.save layouts; bad
files fail with one CheckpointError line."""

import collections
import zipfile

import numpy as np
import pytest

from tip_jax.convert.torch_file import load_state_dict
from tip_jax.errors import CheckpointError

torch = pytest.importorskip("torch")


def _state_dict():
  """A module's state dict (with its `_metadata`) plus tensors that exercise storage
  offsets, shared storages, strides and other dtypes."""
  torch.manual_seed(0)
  state = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).state_dict()
  shared = torch.randn(10)
  state["slice"] = shared[2:5]
  state["same_storage"] = shared[6:]
  state["transposed"] = torch.randn(4, 3).t()
  state["half"] = torch.randn(2, 2).half()
  state["bfloat16"] = torch.randn(3).bfloat16()
  state["empty"] = torch.zeros(0, 3)
  return state


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_equals_torch_load(tmp_path, zip_format):
  path = str(tmp_path / "w.pth")
  torch.save(_state_dict(), path, _use_new_zipfile_serialization=zip_format)
  ref = torch.load(path)
  ours = load_state_dict(path)
  assert list(ours) == list(ref)
  for key, tensor in ref.items():
    expected = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
    got = ours[key].astype(np.float32) if tensor.dtype == torch.bfloat16 else ours[key]
    assert got.dtype == expected.dtype and got.shape == expected.shape, key
    np.testing.assert_array_equal(got, expected, err_msg=key)


def test_bad_files_are_one_line(tmp_path):
  with pytest.raises(CheckpointError, match=r"cannot read .*absent.pth"):
    load_state_dict(str(tmp_path / "absent.pth"))
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"<html>404: Not Found</html>" * 10)
  with pytest.raises(CheckpointError, match=r"garbage.pth: not a PyTorch weight file"):
    load_state_dict(str(garbage))
  other_zip = tmp_path / "other.pth"
  with zipfile.ZipFile(other_zip, "w") as z:
    z.writestr("readme.txt", "hello")
  with pytest.raises(CheckpointError, match=r"other.pth: a zip archive but not a torch.save"):
    load_state_dict(str(other_zip))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_file_fails(tmp_path, zip_format):
  path = tmp_path / "w.pth"
  torch.save(_state_dict(), path, _use_new_zipfile_serialization=zip_format)
  path.write_bytes(path.read_bytes()[:-40])
  truncated = r"w.pth: (a damaged or truncated zip|storage .* (holds|is missing or truncated))"
  with pytest.raises(CheckpointError, match=truncated):
    load_state_dict(str(path))


def test_refuses_code_and_non_state_dicts(tmp_path):
  module = tmp_path / "module.pth"
  torch.save(torch.nn.ReLU(), module)  # a whole module pickles its class
  with pytest.raises(CheckpointError, match=r"module.pth: refusing to unpickle torch.nn"):
    load_state_dict(str(module))
  nested = tmp_path / "nested.pth"
  torch.save({"state_dict": collections.OrderedDict(w=torch.ones(2))}, nested)
  with pytest.raises(CheckpointError, match=r"nested.pth: holds a dict that is not a state dict"):
    load_state_dict(str(nested))

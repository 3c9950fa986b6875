"""pytorch-fid's state dict -> our FID Inception weights: a rename plus the conv
transpose; the classifier and BN counters are dropped; wrong files are one line.
(That the converted weights give pytorch-fid's features is tests/metrics/test_inception.py.)"""

import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from tip_jax.convert.inception import convert_file, convert_state_dict
from tip_jax.errors import CheckpointError
from tip_jax.metrics import inception

torch = pytest.importorskip("torch")
from tests.fixtures.inception import random_state_dict  # noqa: E402  (needs torch)


@pytest.fixture(scope="module")
def state():
  return {k: v.numpy() for k, v in random_state_dict(0).items()}


def test_renames_transposes_and_drops_the_classifier(state):
  flat = convert_state_dict(state)
  assert set(flat) == set(inception.param_shapes())
  assert {"fc.weight", "fc.bias", "Conv2d_1a_3x3.bn.num_batches_tracked"} <= set(state)
  np.testing.assert_array_equal(flat["Mixed_6b/branch7x7_2/conv/kernel"],
                                state["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  assert flat["Mixed_6b/branch7x7_2/conv/kernel"].shape == (1, 7, 128, 128)
  for ours, theirs in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"),
                       ("var", "running_var")):
    np.testing.assert_array_equal(flat[f"Mixed_7c/branch_pool/bn/{ours}"],
                                  state[f"Mixed_7c.branch_pool.bn.{theirs}"])


def test_wrong_state_dicts_name_the_key(state):
  missing = {k: v for k, v in state.items() if k != "Mixed_5b.branch1x1.bn.running_var"}
  with pytest.raises(CheckpointError, match=r"missing key 'Mixed_5b/branch1x1/bn/var' and 0 more"):
    convert_state_dict(missing, "w.pth")
  extra = {**state, "AuxLogits.conv0.conv.weight": np.zeros((128, 768, 1, 1), np.float32)}
  with pytest.raises(CheckpointError, match=r"w.pth: unexpected key 'AuxLogits/conv0/conv/kernel'"):
    convert_state_dict(extra, "w.pth")
  odd = {**state, "Mixed_5b.branch1x1.conv.bias": np.zeros(64, np.float32)}
  with pytest.raises(CheckpointError,
                     match=r"w.pth: unexpected key 'Mixed_5b.branch1x1.conv.bias'"):
    convert_state_dict(odd, "w.pth")
  wrong = {**state, "Conv2d_1a_3x3.conv.weight": np.zeros((32, 1, 3, 3), np.float32)}
  with pytest.raises(CheckpointError,
                     match=r"'Conv2d_1a_3x3/conv/kernel' has shape \(3, 3, 1, 32\)"):
    convert_state_dict(wrong, "w.pth")


def test_convert_file_writes_what_load_inception_reads(state, tmp_path):
  pth, out = tmp_path / "w.pth", str(tmp_path / "w.safetensors")
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pth)
  assert convert_file(str(pth), out) == len(inception.param_shapes())
  flat = load_file(out)
  np.testing.assert_array_equal(flat["Conv2d_4a_3x3/bn/mean"],
                                state["Conv2d_4a_3x3.bn.running_mean"])
  params = inception.load_inception(out).params
  assert params["Mixed_7b"]["branch3x3_2a"]["conv"]["kernel"].shape == (1, 3, 384, 384)


def test_cli_fails_with_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "tip_jax.cli.convert_inception",
                         str(tmp_path / "absent.pth"), str(tmp_path / "out.safetensors")],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      f"tip-convert-inception: cannot read {tmp_path / 'absent.pth'}: No such file or directory"]
  assert not (tmp_path / "out.safetensors").exists()

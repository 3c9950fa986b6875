"""The FID Inception equals pytorch-fid's on the same (random) weights, read from a
torch.save'd file through our converter; its resize is PyTorch's bilinear."""

import numpy as np
import pytest

from tip_jax.convert.inception import convert_file
from tip_jax.errors import CheckpointError
from tip_jax.metrics import inception

torch = pytest.importorskip("torch")
from tests.fixtures import inception as refs  # noqa: E402  (needs torch)

# measured on the 2-core CPU machine: 4.8e-6 (features up to 11.4)
POOL3_ATOL = 1e-4
# PyTorch's CPU bilinear computes the source coordinate scale * (dst + 0.5) - 0.5 with
# or without a fused multiply-add depending on its code path, so its own weights differ
# between paths by one float32 ulp of the coordinate (3.8e-6 at 64 < src < 128); ours
# equal one of its paths. Measured: 3.6e-6 (0 for 299x299, which copies).
RESIZE_ATOL = 1e-5


@pytest.fixture(scope="module")
def features(tmp_path_factory):
  """One forward per side on 2 images of 64x80 (resized up to 299x299): noise, and a
  smooth pattern (noise images all give alike features)."""
  folder = tmp_path_factory.mktemp("inception")
  state = refs.random_state_dict(0)
  pth, ours = str(folder / "pt_inception.pth"), str(folder / "inception.safetensors")
  # legacy serialization, as pytorch-fid's 2019 weights file
  torch.save(state, pth, _use_new_zipfile_serialization=False)
  convert_file(pth, ours)
  rng = np.random.default_rng(1)
  y, x = np.mgrid[0:64, 0:80] / 16.0
  smooth = 0.5 + 0.4 * np.stack([np.sin(x + y), np.cos(2 * x), np.sin(3 * y)], axis=-1)
  images = np.stack([rng.uniform(size=(64, 80, 3)), smooth]).astype(np.float32)
  reference = refs.reference_features(state, images)
  return np.asarray(inception.load_inception(ours).features(images)), reference


def test_pool3_matches_pytorch_fid(features):
  ours, reference = features
  assert ours.shape == reference.shape == (2, inception.FEATURES)
  assert reference.std() > 0.1 and np.abs(reference[0] - reference[1]).max() > 1  # not degenerate
  np.testing.assert_allclose(ours, reference, rtol=0, atol=POOL3_ATOL)


@pytest.mark.parametrize("size", [(64, 80), (512, 401), (299, 299)])
def test_resize_is_torch_bilinear_without_antialias(size):
  images = np.random.default_rng(2).uniform(size=(2, *size, 3)).astype(np.float32)
  ours = np.asarray(inception.resize_to_inception(images))
  nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  ref = torch.nn.functional.interpolate(nchw,
                                        size=(299, 299), mode="bilinear", align_corners=False)
  np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), rtol=0, atol=RESIZE_ATOL)


def test_missing_and_garbled_weights_are_one_line(tmp_path):
  with pytest.raises(CheckpointError, match=r"absent.safetensors: no such file; convert"):
    inception.load_inception(str(tmp_path / "absent.safetensors"))
  bad = tmp_path / "bad.safetensors"
  bad.write_bytes(b"\x00" * 64)
  with pytest.raises(CheckpointError, match=r"bad.safetensors: not a readable safetensors file"):
    inception.load_inception(str(bad))

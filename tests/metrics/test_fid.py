"""FID statistics and distance equal pytorch-fid's (and numpy's) in float64, including
its fallbacks; statistics files round-trip and read pytorch-fid's."""

import numpy as np
import pytest
from scipy import linalg

from tip_jax.errors import DataError
from tip_jax.metrics import fid

pytest.importorskip("torch")
from tests.fixtures.torch_refs import torchvision  # noqa: E402

torchvision()  # before pytorch_fid imports it
from pytorch_fid.fid_score import calculate_frechet_distance  # noqa: E402


def _features(rng, n, dim, power):
  """Non-negative, correlated, pool3-like features (float32, as the network gives)."""
  mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
  return np.abs(rng.normal(size=(n, dim)) @ mix + 0.5) ** power


def _stats(x, batch=37):
  acc = fid.FeatureStats(x.shape[1])
  for start in range(0, len(x), batch):
    acc.add(x[start:start + batch])
  return acc.stats()


def test_feature_stats_equal_numpy_mean_and_cov(rng):
  x = _features(rng, 300, 64, 1.0).astype(np.float32) * 10
  mu, sigma, count = _stats(x)
  assert count == 300 and mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, np.mean(x.astype(np.float64), axis=0), rtol=1e-13, atol=0)
  np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=0,
                             atol=1e-12 * np.abs(np.cov(x, rowvar=False)).max())
  with pytest.raises(ValueError, match=r"expected \(batch, 64\) features"):
    fid.FeatureStats(64).add(x[:, :32])


@pytest.mark.parametrize("n,dim", [(500, 32), (64, 128)])  # (64, 128): singular covariances
def test_frechet_distance_equals_pytorch_fid(rng, n, dim):
  a = _stats(_features(rng, n, dim, 1.0).astype(np.float32))
  b = _stats(_features(rng, n, dim, 1.5).astype(np.float32))
  ours = fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  ref = calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  assert ours > 0
  assert abs(ours - ref) <= 1e-6 * abs(ref), (ours, ref)
  assert abs(fid.frechet_distance(a.mu, a.sigma, a.mu, a.sigma)) < 1e-6 * ref


def test_singular_product_takes_the_offset_path_as_pytorch_fid(rng, monkeypatch):
  """scipy >= 1.16 rarely returns a non-finite sqrtm, so the first sqrtm of each call is
  made to fail, as older scipy did on singular products; both then add 1e-6 to the
  diagonals and agree."""
  a = _stats(_features(rng, 64, 128, 1.0).astype(np.float32))
  b = _stats(_features(rng, 64, 128, 1.5).astype(np.float32))
  real_sqrtm, calls = linalg.sqrtm, []

  def failing_first(m, *args, **kwargs):
    calls.append(len(calls))
    out = real_sqrtm(m, *args, **kwargs)
    if len(calls) % 2 == 1:  # the product's sqrtm
      return (np.full_like(out[0], np.nan), out[1]) if isinstance(out, tuple) else out * np.nan
    return out

  monkeypatch.setattr(linalg, "sqrtm", failing_first)
  ours = fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  ref = calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  assert len(calls) == 4  # two sqrtm calls each
  assert abs(ours - ref) <= 1e-6 * abs(ref), (ours, ref)


def test_complex_sqrtm_is_a_clear_error():
  eye = np.eye(3)
  with pytest.raises(ValueError, match="imaginary diagonal entries up to 1 "):
    fid.frechet_distance(np.zeros(3), -eye, np.zeros(3), eye)
  with pytest.raises(ValueError, match="Imaginary component"):  # pytorch-fid agrees
    calculate_frechet_distance(np.zeros(3), -eye, np.zeros(3), eye)
  with pytest.raises(ValueError, match="different sizes"):
    fid.frechet_distance(np.zeros(3), eye, np.zeros(2), np.eye(2))


def test_stats_files_round_trip_and_read_pytorch_fid_files(rng, tmp_path):
  stats = _stats(_features(rng, 50, 16, 1.0))
  fid.save_stats(str(tmp_path / "ours.npz"), stats)
  back = fid.load_stats(str(tmp_path / "ours.npz"))
  assert back.count == 50
  np.testing.assert_array_equal(back.mu, stats.mu)
  np.testing.assert_array_equal(back.sigma, stats.sigma)
  # pytorch-fid's --save-stats writes savez_compressed(mu=, sigma=)
  np.savez_compressed(tmp_path / "theirs.npz", mu=stats.mu, sigma=stats.sigma)
  theirs = fid.load_stats(str(tmp_path / "theirs.npz"))
  assert theirs.count == 0
  np.testing.assert_array_equal(theirs.sigma, stats.sigma)


def test_bad_stats_files_are_one_line(tmp_path):
  with pytest.raises(DataError, match="absent.npz: no such FID statistics file"):
    fid.load_stats(str(tmp_path / "absent.npz"))
  (tmp_path / "garbage.npz").write_bytes(b"not an npz")
  with pytest.raises(DataError, match="garbage.npz: not a readable FID statistics .npz"):
    fid.load_stats(str(tmp_path / "garbage.npz"))
  np.savez(tmp_path / "other.npz", mean=np.zeros(3))
  with pytest.raises(DataError, match="other.npz: an .npz without the FID statistics"):
    fid.load_stats(str(tmp_path / "other.npz"))
  np.savez(tmp_path / "shapes.npz", mu=np.zeros(3), sigma=np.eye(2))
  with pytest.raises(DataError, match="mismatched shapes"):
    fid.load_stats(str(tmp_path / "shapes.npz"))

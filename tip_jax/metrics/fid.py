"""Fréchet Inception Distance, pytorch-fid compatible.

Our FID is pytorch-fid's (0.3.0): the same weights file
(`pt_inception-2015-12-05-6726825d.pth`, converted by `tip-convert-inception`), the
same input path (bilinear resize to 299x299 without antialiasing, then [-1, 1]; see
`tip_jax.metrics.inception`), pool3 features, statistics and Fréchet distance in
float64 with its formula and its fallbacks. It is not clean-fid, which resizes with
PIL's antialiased bicubic (and reads NVIDIA's TorchScript copy of the network), so
clean-fid numbers differ from ours; ours are comparable with papers that used
pytorch-fid.

    stats = FeatureStats()
    for batch in images:                       # float [0, 1] NHWC
      stats.add(inception.features(batch))
    mu, sigma, _ = stats.stats()
    ref = load_stats("test_set_stats.npz")     # computed once, cached with save_stats
    fid = frechet_distance(mu, sigma, ref.mu, ref.sigma)

Statistics files are `.npz` with pytorch-fid's keys (`mu`, `sigma`; we add `count`),
so either tool reads the other's.
"""

from __future__ import annotations

import zipfile
from typing import NamedTuple

import numpy as np
from absl import logging
from scipy import linalg

from tip_jax.errors import DataError
from tip_jax.image_io import write_atomically

_SINGULAR_EPS = 1e-6    # added to both diagonals when sqrtm of the product fails
_IMAGINARY_ATOL = 1e-3  # largest |imaginary part| on sqrtm's diagonal that is rounding


class Stats(NamedTuple):
  mu: np.ndarray     # (D,) float64
  sigma: np.ndarray  # (D, D) float64
  count: int         # feature vectors behind them; 0 if unknown (pytorch-fid's files)


class FeatureStats:
  """Mean and covariance of feature batches, accumulated in float64.

  Equal to `np.mean(x, 0)` and `np.cov(x, rowvar=False)` (N - 1) of all the features
  to float64 rounding, without keeping them (a 50k-image set would hold 800 MB):
  it sums x - shift and its outer products, with shift the first batch's mean, so
  the second moment is taken about a point near the mean and does not cancel.
  """

  def __init__(self, dim: int = 2048):
    self.dim = dim
    self.count = 0
    self._shift: np.ndarray | None = None
    self._sum = np.zeros(dim, np.float64)
    self._outer = np.zeros((dim, dim), np.float64)

  def add(self, features) -> None:
    """Adds a (B, dim) batch (numpy or JAX, any float dtype)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f"FeatureStats({self.dim}): expected (batch, {self.dim}) features, "
                       f"got shape {x.shape}")
    if self._shift is None:
      self._shift = x.mean(axis=0)
    d = x - self._shift
    self._sum += d.sum(axis=0)
    self._outer += d.T @ d
    self.count += x.shape[0]

  def stats(self) -> Stats:
    n = self.count
    if n < 2:
      raise ValueError(f"FeatureStats: a covariance needs at least 2 feature vectors, got {n}")
    mean_d = self._sum / n
    sigma = (self._outer - n * np.outer(mean_d, mean_d)) / (n - 1)
    return Stats(self._shift + mean_d, sigma, n)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)), in float64.

  pytorch-fid's `calculate_frechet_distance` step by step: scipy's `sqrtm` of the
  product; if that is not finite, again with 1e-6 added to both diagonals; a complex
  result is accepted (real part) only if its diagonal's imaginary parts are within
  1e-3 of 0. (pytorch-fid passes `disp=False`, which in scipy >= 1.16 only adds an
  error estimate to the return value and a deprecation warning: same matrix.)
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"frechet_distance: statistics of different sizes: mu {mu1.shape} vs "
                     f"{mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning("FID: sqrtm(sigma1 sigma2) is not finite (singular product); adding %g "
                    "to the diagonal of both covariances", _SINGULAR_EPS)
    offset = np.eye(sigma1.shape[0]) * _SINGULAR_EPS
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    imaginary = np.abs(np.diagonal(covmean).imag).max()
    if not imaginary <= _IMAGINARY_ATOL:  # NaN fails too, as in pytorch-fid's allclose
      raise ValueError(f"FID: sqrtm(sigma1 sigma2) has imaginary diagonal entries up to "
                       f"{imaginary:.3g} (> {_IMAGINARY_ATOL}): the covariances are not "
                       "positive semi-definite (corrupt statistics?)")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def save_stats(path: str, stats: Stats) -> None:
  """Writes `.npz` with pytorch-fid's keys plus `count`, atomically."""
  write_atomically(path, lambda f: np.savez(f, mu=stats.mu, sigma=stats.sigma,
                                            count=np.int64(stats.count)))


def load_stats(path: str) -> Stats:
  """Reads a file of `save_stats` or pytorch-fid's `--save-stats`; DataError if unusable."""
  try:
    with np.load(path, allow_pickle=False) as f:
      mu = np.asarray(f["mu"], np.float64)
      sigma = np.asarray(f["sigma"], np.float64)
      count = int(f["count"]) if "count" in f.files else 0
  except FileNotFoundError:
    raise DataError(f"{path}: no such FID statistics file") from None
  except KeyError:
    raise DataError(f"{path}: an .npz without the FID statistics `mu` and `sigma`") from None
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise DataError(f"{path}: not a readable FID statistics .npz ({e})") from None
  if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
    raise DataError(f"{path}: FID statistics of mismatched shapes mu {mu.shape}, "
                    f"sigma {sigma.shape}")
  return Stats(mu, sigma, count)

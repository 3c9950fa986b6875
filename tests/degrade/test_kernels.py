"""Blur kernels: parity with BasicSR's float64 kernels, J1 accuracy, sampling rules."""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from tests.fixtures.basicsr_ref import load_basicsr_module
from tip_jax.degrade import kernels

# Real-ESRGAN's first-stage options (train_realesrnet_x4plus.yml).
_REAL_ESRGAN = dict(
    kernel_list=("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                 "plateau_aniso"),
    kernel_prob=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
    sigma_range=(0.2, 3.0), betag_range=(0.5, 4.0), betap_range=(1.0, 2.0), sinc_prob=0.1)
_DRAWS = 10_000
_make_kernels = jax.jit(kernels.make_kernels)
_make_kernel = jax.jit(kernels.make_kernel)


@pytest.fixture(scope="module")
def bsr():
  return load_basicsr_module("data/degradations.py")


def _pad21(kernel: np.ndarray) -> np.ndarray:
  """Real-ESRGAN's dataset padding of a size x size kernel to 21x21."""
  pad = (kernels.KERNEL_SIZE - kernel.shape[0]) // 2
  return np.pad(kernel, ((pad, pad), (pad, pad)))


def _random_params(rng: np.random.Generator, kind: str, size: int) -> dict:
  """Wider than Real-ESRGAN's ranges so parity holds for TIP's own sigmas too."""
  sigma_x = rng.uniform(0.2, 5.0)
  iso = kind in ("iso", "generalized_iso", "plateau_iso")
  sigma_y = sigma_x if iso else rng.uniform(0.2, 5.0)
  theta = 0.0 if iso else rng.uniform(-math.pi, math.pi)
  beta = rng.uniform(0.5, 4.0) if kind.startswith(("generalized", "plateau")) else 1.0
  omega = rng.uniform(math.pi / 5, math.pi) if kind == "sinc" else 0.0
  return dict(kind=kernels.KINDS.index(kind), size=size, sigma_x=sigma_x, sigma_y=sigma_y,
              theta=theta, beta=beta, omega=omega)


def _reference(bsr, p: dict) -> np.ndarray:
  """BasicSR's float64 kernel for one parameter dict, padded to 21x21."""
  kind, size = kernels.KINDS[p["kind"]], p["size"]
  iso = kind in ("iso", "generalized_iso", "plateau_iso")
  args = (size, p["sigma_x"], p["sigma_y"], p["theta"])
  if kind in ("iso", "aniso"):
    return _pad21(bsr.bivariate_Gaussian(*args, isotropic=iso))
  if kind.startswith("generalized"):
    return _pad21(bsr.bivariate_generalized_Gaussian(*args, p["beta"], isotropic=iso))
  if kind.startswith("plateau"):
    return _pad21(bsr.bivariate_plateau(*args, p["beta"], isotropic=iso))
  with np.errstate(divide="ignore", invalid="ignore"):  # its r = 0 entry, overwritten
    return bsr.circular_lowpass_kernel(p["omega"], size, pad_to=kernels.KERNEL_SIZE)


@pytest.mark.parametrize("kind", kernels.KINDS[:7])
def test_make_kernel_matches_basicsr(bsr, kind):
  rng = np.random.default_rng(kernels.KINDS.index(kind))
  params = [_random_params(rng, kind, size) for size in kernels.SIZES for _ in range(25)]
  ours = np.asarray(_make_kernels(kernels.stack_kernels(params)), np.float64)
  ref = np.stack([_reference(bsr, p) for p in params])
  # Measured max abs error (our float32 vs BasicSR's float64) over these 200 kernels
  # per kind: iso 1.5e-7, aniso 6.7e-8, generalized_iso 1.4e-7, generalized_aniso
  # 1.5e-7, plateau_iso 1.6e-7, plateau_aniso 1.5e-7, sinc 2.0e-7; over 2000 per kind
  # the worst was 4.4e-7 (generalized_aniso with beta near 4).
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
  np.testing.assert_allclose(ours.sum((1, 2)), 1.0, rtol=0, atol=1e-5)


def test_zero_outside_window_and_pulse():
  rng = np.random.default_rng(1)
  params = [_random_params(rng, "plateau_aniso", size) for size in kernels.SIZES]
  out = np.asarray(_make_kernels(kernels.stack_kernels(params)))
  for size, kernel in zip(kernels.SIZES, out):  # a plateau never underflows to 0
    window = np.zeros((21, 21), bool)
    pad = (kernels.KERNEL_SIZE - size) // 2
    window[pad:kernels.KERNEL_SIZE - pad, pad:kernels.KERNEL_SIZE - pad] = True
    assert np.all(kernel[window] > 0) and np.all(kernel[~window] == 0)
    assert np.isclose(kernel.sum(), 1.0, atol=1e-6)
  pulse = np.asarray(_make_kernel(**kernels.pulse_params()))
  np.testing.assert_array_equal(pulse, np.eye(1, 441, 220).reshape(21, 21))


def test_grid_orientation():
  """sigma_x spreads along columns (image width), as BasicSR's meshgrid-based grid does."""
  wide = np.asarray(_make_kernel(kernels.KINDS.index("aniso"), 21, 3.0, 0.5, 0.0, 1.0, 0.0))
  assert wide[10, 13] > 1e-2 and wide[13, 10] < 1e-6
  # theta = pi/2 swaps the axes.
  tall = np.asarray(_make_kernel(1, 21, 3.0, 0.5, math.pi / 2, 1.0, 0.0))
  np.testing.assert_allclose(tall, wide.T, atol=1e-7)


def test_degenerate_sigma_is_pulse():
  """sigma 0 (a skipped TIP blur stage carries sigma 0) gives the identity, not NaN."""
  for kind in ("iso", "generalized_aniso", "plateau_iso"):
    k = np.asarray(_make_kernel(kernels.KINDS.index(kind), 21, 0.0, 0.0, 0.0, 1.0, 0.0))
    np.testing.assert_array_equal(k, np.asarray(_make_kernel(7, 21, 0, 0, 0, 1, 0)))
  assert kernels.gaussian_kernel_params(0.0) == kernels.pulse_params()


def test_gaussian_kernel_params_matches_basicsr(bsr):
  params = [kernels.gaussian_kernel_params(s) for s in (0.3, 1.0, 2.9, 5.0)]
  ours = np.asarray(_make_kernels(kernels.stack_kernels(params)))
  ref = np.stack([bsr.bivariate_Gaussian(21, s, s, 0.0, isotropic=True)
                  for s in (0.3, 1.0, 2.9, 5.0)])
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_bessel_j1_matches_scipy():
  x = np.linspace(0.0, 45.0, 100_001).astype(np.float32)
  ours = np.asarray(jax.jit(kernels.bessel_j1)(jnp.asarray(x)), np.float64)
  err = np.abs(ours - scipy.special.j1(x.astype(np.float64)))
  # Measured: max 7.9e-8 at these float32 points (a plain float32 trapezoid: 4.3e-7;
  # with 64 nodes instead of 80, aliasing adds ~1e-6 near x = 45).
  assert err.max() < 2e-7, err.max()


def _assert_frequency(count: int, n: int, p: float) -> None:
  """Binomial count within 4 standard errors of n p."""
  assert abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1e-9, (count, n, p)


@pytest.fixture(scope="module")
def blur_draws() -> list[dict]:
  rng = np.random.default_rng(2024)
  return [kernels.sample_blur_kernel(rng, **_REAL_ESRGAN) for _ in range(_DRAWS)]


def test_blur_kind_and_size_frequencies(blur_draws):
  kinds = collections.Counter(kernels.KINDS[d["kind"]] for d in blur_draws)
  _assert_frequency(kinds["sinc"], _DRAWS, _REAL_ESRGAN["sinc_prob"])
  for name, prob in zip(_REAL_ESRGAN["kernel_list"], _REAL_ESRGAN["kernel_prob"]):
    _assert_frequency(kinds[name], _DRAWS, (1 - _REAL_ESRGAN["sinc_prob"]) * prob)
  sizes = collections.Counter(d["size"] for d in blur_draws)
  assert set(sizes) == set(kernels.SIZES)
  for size in kernels.SIZES:
    _assert_frequency(sizes[size], _DRAWS, 1 / len(kernels.SIZES))


def test_blur_parameter_ranges(blur_draws):
  lo, hi = _REAL_ESRGAN["sigma_range"]
  for d in blur_draws:
    kind = kernels.KINDS[d["kind"]]
    if kind == "sinc":
      low = math.pi / 3 if d["size"] < 13 else math.pi / 5
      assert low <= d["omega"] <= math.pi
      continue
    assert lo <= d["sigma_x"] <= hi and lo <= d["sigma_y"] <= hi
    if kind.endswith("iso") and not kind.endswith("aniso"):
      assert d["sigma_y"] == d["sigma_x"] and d["theta"] == 0.0
    else:
      assert -math.pi <= d["theta"] <= math.pi
    if kind in ("iso", "aniso"):
      assert d["beta"] == 1.0
  big_sinc = [d["omega"] for d in blur_draws if d["kind"] == 6 and d["size"] >= 13]
  assert min(big_sinc) < math.pi / 3  # the lower cutoffs are reachable for big windows


def test_beta_rule(blur_draws):
  gen = [d["beta"] for d in blur_draws if kernels.KINDS[d["kind"]].startswith("generalized")]
  assert all(0.5 <= b <= 4.0 for b in gen)
  _assert_frequency(sum(b < 1 for b in gen), len(gen), 0.5)
  plateau = [d["beta"] for d in blur_draws if kernels.KINDS[d["kind"]].startswith("plateau")]
  assert all(1.0 <= b <= 2.0 for b in plateau)
  _assert_frequency(sum(b == 1.0 for b in plateau), len(plateau), 0.5)  # U(1, 1) half the time


def test_final_sinc():
  rng = np.random.default_rng(7)
  draws = [kernels.sample_final_sinc(rng, 0.8) for _ in range(_DRAWS)]
  sincs = [d for d in draws if d["kind"] == kernels.KINDS.index("sinc")]
  _assert_frequency(len(sincs), _DRAWS, 0.8)
  assert all(d == kernels.pulse_params() for d in draws if d["kind"] != 6)
  assert all(math.pi / 3 <= d["omega"] <= math.pi for d in sincs)
  sizes = collections.Counter(d["size"] for d in sincs)
  for size in kernels.SIZES:
    _assert_frequency(sizes[size], len(sincs), 1 / len(kernels.SIZES))


def test_sampling_is_deterministic():
  def draw(seed):
    rng = np.random.default_rng(seed)
    return ([kernels.sample_blur_kernel(rng, **_REAL_ESRGAN) for _ in range(200)] +
            [kernels.sample_final_sinc(rng, 0.8) for _ in range(50)])
  assert draw(11) == draw(11)
  assert draw(11) != draw(12)


def test_stack_kernels_dtypes():
  stacked = kernels.stack_kernels([kernels.pulse_params(), kernels.gaussian_kernel_params(2.0)])
  assert set(stacked) == set(kernels.FIELDS)
  assert stacked["kind"].dtype == np.int32 and stacked["size"].dtype == np.int32
  assert all(stacked[f].dtype == np.float32 for f in kernels.FIELDS[2:])
  assert all(v.shape == (2,) for v in stacked.values())


def test_rejects_unknown_kernel_names():
  with pytest.raises(ValueError, match="unknown blur kernels"):
    kernels.sample_blur_kernel(np.random.default_rng(0), ("iso", "skew"), (0.5, 0.5),
                               (0.2, 3.0), (0.5, 4.0), (1.0, 2.0), 0.1)

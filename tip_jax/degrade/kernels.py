"""Real-ESRGAN's blur kernels: parameters drawn on the host, 21x21 kernels built on device.

The host only draws a handful of scalars per kernel (`sample_blur_kernel`,
`sample_final_sinc`, `gaussian_kernel_params`) and stacks them into per-field arrays
(`stack_kernels`). The device turns them into kernels with `make_kernel`, whose every
argument may be traced, so `jax.vmap(make_kernel)` builds a batch of differently
shaped and sized kernels with one static computation. This keeps the random draws in
numpy (cheap, reproducible from a `numpy.random.Generator`) and the arithmetic in XLA.

Conventions, matched to BasicSR's `basicsr/data/degradations.py` (Real-ESRGAN's
source of kernels) and checked against it in `tests/test_degrade_kernels.py`:

- Every kernel is a 21x21 array: a size x size kernel (size odd, 7..21) normalised to
  sum 1 over its own window, then zero-padded symmetrically to 21 as Real-ESRGAN's
  dataset does. Evaluating on the full 21x21 grid, zeroing outside the window and then
  normalising gives the same numbers with a static shape.
- Offsets are integers from the centre. `x` is the COLUMN offset and `y` the ROW
  offset (BasicSR's `mesh_grid` is `np.meshgrid(ax, ax)`, whose first output varies
  along columns), so `sigma_x` spreads a kernel along image width, and a positive
  `theta` turns its x axis towards +row, i.e. clockwise on screen (rows go down).
- Sigma = R diag(sigma_x^2, sigma_y^2) R^T with R = [[cos, -sin], [sin, cos]], and
  q = d^T Sigma^-1 d for d = (x, y). Gaussian: exp(-q/2); generalized Gaussian:
  exp(-q^beta/2); plateau: 1/(q^beta + 1).
- "sinc" is BasicSR's `circular_lowpass_kernel`: omega J1(omega r)/(2 pi r), with the
  r = 0 limit omega^2/(4 pi). It has negative lobes; the sum is still 1.
- "pulse" is the identity (a 1 at the centre): what a stage without blur applies.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

KERNEL_SIZE = 21
KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
         "plateau_aniso", "sinc", "pulse")
FIELDS = ("kind", "size", "sigma_x", "sigma_y", "theta", "beta", "omega")
SIZES = tuple(range(7, KERNEL_SIZE + 1, 2))  # Real-ESRGAN's hard-coded kernel_range

_BLUR_KINDS = KINDS[:6]
_ISOTROPIC = ("iso", "generalized_iso", "plateau_iso")
_INT_FIELDS = ("kind", "size")

# Bessel's integral J1(x) = (1/2pi) int_0^2pi sin(t) sin(x sin t) dt as a periodic
# trapezoid over N nodes converges geometrically: its aliasing error is about
# J_{N-1}(x), ~1e-6 at x = 45 for N = 64 and ~1e-11 for N = 80. The integrand is
# symmetric under t -> pi - t and t -> 2 pi - t, so only the nodes in (0, pi/2] are
# evaluated, with weights 4/N (and 2/N at pi/2, which has one mirror image).
_J1_NODES = 80
_J1_T = 2 * np.pi * np.arange(1, _J1_NODES // 4 + 1) / _J1_NODES
_J1_WEIGHT = (np.where(np.arange(1, _J1_NODES // 4 + 1) == _J1_NODES // 4, 2.0, 4.0)
              * np.sin(_J1_T) / _J1_NODES).astype(np.float32)
_HIGH_BITS = 0xFFFFF000  # a float32's sign, exponent and top 11 stored mantissa bits

# The fixed centred grid: integer offsets (exact in float32) and float64 radii.
_AX = np.arange(KERNEL_SIZE) - KERNEL_SIZE // 2
_COL, _ROW = np.meshgrid(_AX, _AX)  # _COL varies along columns: BasicSR's x
_RADIUS = np.sqrt(_COL**2 + _ROW**2)
_SAFE_RADIUS = np.where(_RADIUS > 0, _RADIUS, 1.0)
_SINC_SCALE = (1 / (2 * np.pi * _SAFE_RADIUS)).astype(np.float32)


def _high_part_np(v: np.ndarray) -> np.ndarray:
  return (v.astype(np.float32).view(np.uint32) & np.uint32(_HIGH_BITS)).view(np.float32)


def _high_part(x: Array) -> Array:
  """x with its low 12 mantissa bits cleared: products of two such values are exact."""
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(_HIGH_BITS)
  return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _j1_of_product(a: Array, b: np.ndarray | float) -> Array:
  """J1(a b) for a traced float32 `a` and a float64 host constant `b` (any shape).

  A plain float32 trapezoid stalls at ~4e-7: the phase a b sin(t), up to 45, is
  rounded, and in a sinc kernel those errors (from rounding a b alone) add up to ~1e-6
  in its normalising sum. So the constant c = b sin(t) is split on the host into a
  12-bit high part and a float32 rest, `a` likewise on device (by bit masks, which no
  compiler contraction can undo); the phase is then P + e with P = hi(a) hi(c) exact
  and e small, and sin(P + e) = sin P cos e + cos P sin e.
  """
  phase = np.multiply.outer(np.asarray(b, np.float64), np.sin(_J1_T))
  phase_high = _high_part_np(phase)
  phase_low = (phase - phase_high).astype(np.float32)
  a = jnp.asarray(a, jnp.float32)[..., None]
  a_high = _high_part(a)
  exact = a_high * phase_high
  small = (a - a_high) * phase_high + a * phase_low
  terms = jnp.sin(exact) * jnp.cos(small) + jnp.cos(exact) * jnp.sin(small)
  return jnp.sum(_J1_WEIGHT * terms, axis=-1)


def bessel_j1(x: Array) -> Array:
  """J1 in float32, within 8e-8 of scipy's float64 J1 on [0, 45].

  `jax.scipy.special.bessel_jn` returns NaN or is off by 0.16 in float32, and the sinc
  kernel needs J1 up to pi * 10 * sqrt(2) ~ 44.4; see `_j1_of_product` for the method.
  """
  return _j1_of_product(x, 1.0)


def _quadratic_form(sigma_x: Array, sigma_y: Array, theta: Array) -> Array:
  """q = d^T Sigma^-1 d on the grid; Sigma^-1 = R diag(1/sx^2, 1/sy^2) R^T, no inverse."""
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  along = cos * _COL + sin * _ROW     # (R^T d)_0, the offset along the rotated x axis
  across = -sin * _COL + cos * _ROW   # (R^T d)_1
  return jnp.square(along / sigma_x) + jnp.square(across / sigma_y)


def _circular_lowpass(omega: Array) -> Array:
  """Unnormalised omega J1(omega r) / (2 pi r), with its r = 0 limit at the centre."""
  value = omega * _j1_of_product(omega, _SAFE_RADIUS) * _SINC_SCALE
  return jnp.where(_RADIUS > 0, value, jnp.square(omega) * np.float32(1 / (4 * np.pi)))


def _is_kind(kind: Array, names: Sequence[str]) -> Array:
  return jnp.isin(kind, np.asarray([KINDS.index(name) for name in names], np.int32))


def make_kernel(kind: Any, size: Any, sigma_x: Any, sigma_y: Any, theta: Any, beta: Any,
                omega: Any) -> Array:
  """One (21, 21) float32 kernel, sum 1, from scalars that may all be traced.

  Every family is evaluated (all are cheap at 21x21; the sinc, 20 Bessel nodes per
  tap, is the dearest at ~35k sines and cosines) and `jnp.select` picks one by the int `kind` code (an index into `KINDS`), so the function vmaps over
  per-example parameters and jits with static shapes. Iso kinds use the sigma_y and
  theta given; the samplers set sigma_y = sigma_x, theta = 0 for them. A Gaussian-family
  kernel with sigma <= 0 is returned as the pulse, its sigma -> 0 limit, instead of NaN.
  Unknown codes also give the pulse. A sinc needs omega > 0 (else the sum is 0).
  """
  kind = jnp.asarray(kind, jnp.int32)
  sigma_x = jnp.asarray(sigma_x, jnp.float32)
  sigma_y = jnp.asarray(sigma_y, jnp.float32)
  beta = jnp.asarray(beta, jnp.float32)
  degenerate = (sigma_x <= 0) | (sigma_y <= 0)
  q = _quadratic_form(jnp.where(degenerate, 1.0, sigma_x), jnp.where(degenerate, 1.0, sigma_y),
                      jnp.asarray(theta, jnp.float32))
  q_beta = jnp.power(q, beta)
  pulse = jnp.asarray(_RADIUS == 0, jnp.float32)
  kernel = jnp.select(
      [degenerate & ~_is_kind(kind, ("sinc", "pulse")),
       _is_kind(kind, ("iso", "aniso")),
       _is_kind(kind, ("generalized_iso", "generalized_aniso")),
       _is_kind(kind, ("plateau_iso", "plateau_aniso")),
       kind == KINDS.index("sinc")],
      [pulse, jnp.exp(-0.5 * q), jnp.exp(-0.5 * q_beta), 1.0 / (q_beta + 1.0),
       _circular_lowpass(jnp.asarray(omega, jnp.float32))],
      pulse)
  half = (jnp.asarray(size, jnp.int32) - 1) // 2
  window = (np.abs(_COL) <= half) & (np.abs(_ROW) <= half)
  kernel = jnp.where(window, kernel, 0.0)
  return kernel / jnp.sum(kernel)


def make_kernels(params: Mapping[str, Any]) -> Array:
  """(B, 21, 21) kernels from `stack_kernels`' per-field arrays (batch leading)."""
  return jax.vmap(make_kernel)(*(params[field] for field in FIELDS))


def _params(kind: str, size: int, sigma_x: float = 1.0, sigma_y: float = 1.0,
            theta: float = 0.0, beta: float = 1.0, omega: float = 0.0) -> dict[str, Any]:
  """A parameter dict with neutral values (sigma 1, theta 0, beta 1, omega 0) by default."""
  return dict(kind=KINDS.index(kind), size=int(size), sigma_x=float(sigma_x),
              sigma_y=float(sigma_y), theta=float(theta), beta=float(beta), omega=float(omega))


def pulse_params() -> dict[str, Any]:
  """The identity kernel's parameters."""
  return _params("pulse", KERNEL_SIZE)


def sinc_params(size: int, omega: float) -> dict[str, Any]:
  """A circular low-pass of cutoff `omega` (radians, pi is Nyquist) on a size x size window."""
  return _params("sinc", size, omega=omega)


def gaussian_kernel_params(sigma: float) -> dict[str, Any]:
  """An isotropic 21x21 Gaussian (TIP's "Deblur with sigma s"); sigma <= 0 is the pulse."""
  if sigma <= 0:
    return pulse_params()
  return _params("iso", KERNEL_SIZE, sigma_x=sigma, sigma_y=sigma)


def _split_beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
  """BasicSR's shape draw: half the time U(lo, 1), else U(1, hi) (assumes lo <= 1 <= hi)."""
  if rng.uniform() < 0.5:
    return rng.uniform(beta_range[0], 1.0)
  return rng.uniform(1.0, beta_range[1])


def _check_kernel_list(kernel_list: Sequence[str], kernel_prob: Sequence[float]) -> np.ndarray:
  """Validates names and turns the weights into probabilities (`random.choices` takes weights)."""
  unknown = [name for name in kernel_list if name not in _BLUR_KINDS]
  if unknown:
    raise ValueError(f"unknown blur kernels {unknown}: expected names in {_BLUR_KINDS}")
  if len(kernel_list) != len(kernel_prob):
    raise ValueError(f"{len(kernel_list)} kernels but {len(kernel_prob)} probabilities")
  prob = np.asarray(kernel_prob, np.float64)
  return prob / prob.sum()


def sample_blur_kernel(rng: np.random.Generator, kernel_list: Sequence[str],
                       kernel_prob: Sequence[float], sigma_range: Sequence[float],
                       betag_range: Sequence[float], betap_range: Sequence[float],
                       sinc_prob: float) -> dict[str, Any]:
  """One Real-ESRGAN first- or second-stage blur kernel's parameters.

  Follows `RealESRGANDataset.__getitem__` and BasicSR's `random_mixed_kernels`: size
  uniform over 7..21 (the config's blur_kernel_size is unused there), then with
  `sinc_prob` a circular low-pass whose cutoff may go lower (pi/5) only for sizes >= 13,
  else a kind drawn by `kernel_prob`. Multiplicative kernel noise is off in Real-ESRGAN
  (noise_range=None), so it is not modelled.
  """
  prob = _check_kernel_list(kernel_list, kernel_prob)
  size = int(rng.choice(SIZES))
  if rng.uniform() < sinc_prob:
    low = math.pi / 3 if size < 13 else math.pi / 5
    return sinc_params(size, rng.uniform(low, math.pi))
  name = kernel_list[int(rng.choice(len(kernel_list), p=prob))]
  sigma_x = rng.uniform(sigma_range[0], sigma_range[1])
  if name in _ISOTROPIC:
    sigma_y, theta = sigma_x, 0.0
  else:
    sigma_y = rng.uniform(sigma_range[0], sigma_range[1])
    theta = rng.uniform(-math.pi, math.pi)
  beta = 1.0
  if name.startswith("generalized"):
    beta = _split_beta(rng, betag_range)
  elif name.startswith("plateau"):
    beta = _split_beta(rng, betap_range)
  return _params(name, size, sigma_x, sigma_y, theta, beta)


def sample_final_sinc(rng: np.random.Generator, prob: float) -> dict[str, Any]:
  """Real-ESRGAN's last-step sinc: with `prob` a low-pass of cutoff U(pi/3, pi), else the pulse."""
  if rng.uniform() < prob:
    size = int(rng.choice(SIZES))
    return sinc_params(size, rng.uniform(math.pi / 3, math.pi))
  return pulse_params()


def stack_kernels(params: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Per-field arrays (batch leading; int32 kind/size, float32 others) for `make_kernels`."""
  return {field: np.asarray([p[field] for p in params],
                            np.int32 if field in _INT_FIELDS else np.float32)
          for field in FIELDS}

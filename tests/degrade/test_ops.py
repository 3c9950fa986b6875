"""tip_jax.degrade.ops against BasicSR / PyTorch (CPU) on the same inputs.

Every canvas test fills the non-content pixels with NaN: an op that reads outside the
content would poison the content and fail loudly.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.fixtures.basicsr_ref import load_basicsr_module
from tip_jax.degrade import noise as noise_lib
from tip_jax.degrade import ops, resizing

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _nchw(x: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, -3)))


def _nhwc(t) -> np.ndarray:
  return np.moveaxis(t.detach().numpy(), -3, -1)


def _canvas(content: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Content at the top-left of a NaN-filled (H, W, C) canvas."""
  out = np.full(shape + content.shape[-1:], np.nan, np.float32)
  out[:content.shape[0], :content.shape[1]] = content
  return out


def _kernels(rng: np.random.Generator, b: int, k: int = 21) -> np.ndarray:
  """Asymmetric positive kernels summing to 1, so correlation != convolution shows."""
  ker = rng.uniform(0, 1, (b, k, k)).astype(np.float32) ** 4
  ker[:, :k // 2] *= 0.2
  return (ker / ker.sum((1, 2), keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def img_util():
  return load_basicsr_module("utils/img_process_util.py")


@pytest.fixture(scope="module")
def degradations():
  return load_basicsr_module("data/degradations.py")


# ----------------------------------------------------------------------------------
# filter2d
# ----------------------------------------------------------------------------------


def test_filter2d_full_images_match_basicsr(rng, img_util):
  images = rng.uniform(0, 1, (3, 40, 52, 3)).astype(np.float32)
  kernels = _kernels(rng, 3)
  ref = _nhwc(img_util.filter2D(_nchw(images), torch.from_numpy(kernels)))
  for method in ("fft", "direct"):
    fn = jax.jit(jax.vmap(lambda x, k, m=method: ops.filter2d(x, k, method=m)))
    out = np.asarray(fn(images, kernels))
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0, err_msg=method)
  fft = jax.vmap(lambda x, k: ops.filter2d(x, k, method="fft"))(images, kernels)
  direct = jax.vmap(lambda x, k: ops.filter2d(x, k, method="direct"))(images, kernels)
  assert float(jnp.max(jnp.abs(fft - direct))) <= 1e-5


def test_filter2d_content_smaller_than_canvas(rng, img_util):
  canvas = (48, 44)
  sizes = [(48, 44), (31, 17), (11, 44)]                     # reflect needs size > 10
  kernels = _kernels(rng, len(sizes))
  contents = [rng.uniform(0, 1, s + (3,)).astype(np.float32) for s in sizes]
  images = np.stack([_canvas(c, canvas) for c in contents])
  size_arr = np.asarray(sizes, np.int32)
  for method in ("fft", "direct"):
    fn = jax.jit(jax.vmap(lambda x, k, s, m=method: ops.filter2d(x, k, s, method=m)))
    out = np.asarray(fn(images, kernels, size_arr))
    for i, (c, (h, w)) in enumerate(zip(contents, sizes)):
      ref = _nhwc(img_util.filter2D(_nchw(c[None]), torch.from_numpy(kernels[i:i + 1])))[0]
      np.testing.assert_allclose(out[i, :h, :w], ref, atol=1e-5, rtol=0, err_msg=method)
      assert np.all(np.isfinite(out[i])), "non-content NaNs leaked into the output"


# ----------------------------------------------------------------------------------
# resize
# ----------------------------------------------------------------------------------

_TORCH_MODES = ("area", "bilinear", "bicubic")


def _torch_resize(x: np.ndarray, mode: int, size=None, scale=None) -> np.ndarray:
  kwargs = dict(size=size) if size is not None else dict(scale_factor=scale)
  if mode != resizing.AREA:
    kwargs["align_corners"] = False
  return _nhwc(F.interpolate(_nchw(x[None]), mode=_TORCH_MODES[mode], **kwargs))[0]


@functools.partial(jax.jit, static_argnames=("out_canvas", "by_scale", "method"))
def _resize_modes(image, in_size, out_size, scale, out_canvas, by_scale, method):
  """The three modes at once (a traced mode, as the degradations pass it), so each shape
  compiles once. "taps" sizes its area windows for the cases' largest ratio (100 -> 15
  pixels), "taps_small" for 2, so that the larger ratios take its matrix fallback.

  `lax.map`, not vmap: a vmapped `lax.cond` (taps' fallback) computes both branches on
  batched operands, and XLA:CPU then divides vectors one ulp off (400 / 60 = 6.666667),
  which moves a bilinear pixel by 4e-5."""
  s = scale if by_scale else None
  kw = ({"method": "matrix"} if method == "matrix" else
        {"method": "taps", "max_ratio": 7.0 if method == "taps" else 2.0})
  fn = lambda m: resizing.resize(image, in_size, out_size, m, out_canvas, scale=s, **kw)
  return jax.lax.map(fn, jnp.arange(3))


_RESIZE_CASES = [
    # (content h, w), canvas, by size or by scale factor, output canvas
    dict(hw=(400, 400), canvas=(400, 400), size=(60, 60)),
    dict(hw=(400, 400), canvas=(400, 400), scale=1.5),
    dict(hw=(100, 100), canvas=(128, 112), size=(37, 37)),
    dict(hw=(37, 37), canvas=(40, 40), size=(128, 128)),
    dict(hw=(50, 80), canvas=(64, 96), size=(37, 121)),
    dict(hw=(100, 90), canvas=(128, 96), scale=0.15),
    dict(hw=(100, 90), canvas=(100, 90), scale=0.7),
    dict(hw=(100, 90), canvas=(128, 96), scale=1.0),
    dict(hw=(100, 90), canvas=(128, 96), scale=1.37),
    # bilinear copies an axis whose size does not change, even with s != 1; bicubic not
    dict(hw=(400, 1000), canvas=(400, 1000), scale=1.001),
]


@pytest.mark.parametrize("method", ["matrix", "taps", "taps_small"])
@pytest.mark.parametrize("case", _RESIZE_CASES,
                         ids=lambda c: f"{c['hw']}-{c.get('size') or c['scale']}")
def test_resize_matches_interpolate(rng, case, method):
  h, w = case["hw"]
  content = rng.uniform(0, 1, (h, w, 3)).astype(np.float32)
  image = _canvas(content, case["canvas"])
  if "scale" in case:
    s = np.float32(case["scale"])
    out_size = tuple(int(v) for v in resizing.output_size_for_scale(jnp.array([h, w]), s))
    assert out_size == (math.floor(h * float(s)), math.floor(w * float(s)))
    scale_arg = s
  else:
    out_size, scale_arg = case["size"], np.float32(-1)
  out_canvas = (out_size[0] + 5, out_size[1] + 3)
  out = _resize_modes(image, jnp.array([h, w]), jnp.array(out_size), scale_arg,
                      out_canvas=out_canvas, by_scale="scale" in case, method=method)
  out = np.asarray(out)
  for mode in range(3):
    if "scale" in case:
      ref = _torch_resize(content, mode, scale=float(scale_arg))  # the float32 value
    else:
      ref = _torch_resize(content, mode, size=out_size)
    assert ref.shape[:2] == tuple(out_size)
    oh, ow = out_size
    np.testing.assert_allclose(out[mode, :oh, :ow], ref, atol=1e-5, rtol=0,
                               err_msg=_TORCH_MODES[mode])
    assert np.all(out[mode, oh:] == 0) and np.all(out[mode, :, ow:] == 0)


def test_resize_scale_mapping_differs_from_size_ratio(rng):
  """100 * 0.375 -> 37 pixels, but 1/0.375 != 100/37: the coordinate mapping differs
  from F.interpolate(size=37), and the `scale` argument reproduces scale_factor."""
  content = rng.uniform(0, 1, (100, 100, 3)).astype(np.float32)
  s = np.float32(0.375)
  fn = jax.jit(lambda x, s: (resizing.resize(x, (100, 100), (37, 37), resizing.BICUBIC, (37, 37), s),
                            resizing.resize(x, (100, 100), (37, 37), resizing.BICUBIC, (37, 37))))
  by_scale, by_size = (np.asarray(y) for y in fn(content, s))
  ref_scale = _torch_resize(content, resizing.BICUBIC, scale=float(s))
  ref_size = _torch_resize(content, resizing.BICUBIC, size=(37, 37))
  np.testing.assert_allclose(by_scale, ref_scale, atol=1e-5, rtol=0)
  np.testing.assert_allclose(by_size, ref_size, atol=1e-5, rtol=0)
  assert np.abs(ref_scale - ref_size).max() > 1e-2
  # Per-axis scale factors, as F.interpolate(scale_factor=(sh, sw)).
  sh, sw = np.float32(0.7), np.float32(1.3)
  oh, ow = (int(resizing.output_size_for_scale(n, v)) for n, v in ((100, sh), (100, sw)))
  pair = jax.jit(lambda x: resizing.resize(x, (100, 100), (oh, ow), resizing.BILINEAR, (oh, ow),
                                      jnp.array([sh, sw])))(content)
  ref = _nhwc(F.interpolate(_nchw(content[None]), scale_factor=(float(sh), float(sw)),
                            mode="bilinear", align_corners=False))[0]
  np.testing.assert_allclose(np.asarray(pair), ref, atol=1e-5, rtol=0)


def test_output_size_for_scale_is_exact():
  """floor(double(n) * double(s)) for float32 s, where the float32 product misrounds."""
  r = np.random.default_rng(1)
  scales = r.uniform(0.15, 1.5, 20000).astype(np.float32)
  # Scales that put n*s within an ulp of an integer: the float32 product lands on it.
  n = np.array([400, 100, 512, 37, 768], np.int32)
  near = np.array([np.nextafter(np.float32(k / m), np.float32(0)) for m in n
                   for k in range(int(0.15 * m), int(1.5 * m))], np.float32)
  near_n = np.concatenate([np.full(len(range(int(0.15 * m), int(1.5 * m))), m) for m in n])
  all_n = np.concatenate([r.choice(n, scales.size), near_n]).astype(np.int32)
  all_s = np.concatenate([scales, near])
  got = np.asarray(jax.jit(resizing.output_size_for_scale)(all_n, all_s))
  want = np.array([math.floor(int(a) * float(b)) for a, b in zip(all_n, all_s)])
  np.testing.assert_array_equal(got, want)
  naive = np.floor(all_n.astype(np.float32) * all_s).astype(np.int64)
  assert np.any(naive != want), "the cases should include float32 misroundings"
  # And PyTorch itself sizes its output this way.
  x = torch.zeros(1, 1, 100, 512)
  for s in near[near_n == 512][:5]:
    out = F.interpolate(x, scale_factor=float(s), mode="bilinear")
    assert out.shape[-1] == math.floor(512 * float(s))


# ----------------------------------------------------------------------------------
# noise
# ----------------------------------------------------------------------------------


def test_gaussian_noise_statistics_and_gray():
  image = jnp.full((64, 64, 3), 0.5, jnp.float32)
  sigma = 20.0 / 255.0
  color = np.asarray(noise_lib.gaussian_noise(image, jax.random.key(0), sigma, False)) - 0.5
  gray = np.asarray(noise_lib.gaussian_noise(image, jax.random.key(0), sigma, True)) - 0.5
  assert abs(color.std() / sigma - 1) < 0.03 and abs(color.mean()) < 3 * sigma / 110
  assert abs(np.corrcoef(color[..., 0].ravel(), color[..., 1].ravel())[0, 1]) < 0.05
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  assert abs(gray.std() / sigma - 1) < 0.05


def _torch_vals(q_image_nchw) -> float:
  """BasicSR's levels rule on one (1, C, H, W) image."""
  q = torch.clamp((q_image_nchw * 255.0).round(), 0, 255) / 255.
  return float(2 ** np.ceil(np.log2(len(torch.unique(q)))))


@pytest.mark.parametrize("count", [1, 2, 3, 5, 16, 17, 128, 129, 255, 256])
def test_poisson_levels_exact(count, degradations):
  r = np.random.default_rng(count)
  levels = r.choice(256, count, replace=False)
  content = r.choice(levels, (30, 20, 3)).astype(np.float32) / 255.0
  content.reshape(-1)[:count] = levels / 255.0          # every level present
  canvas = _canvas(content, (40, 32))
  canvas[30:, :] = 0.77                                  # finite non-content values
  canvas[:, 20:] = 0.13                                  # (NaN also fine; see below)
  levels = jax.jit(noise_lib.poisson_levels)
  got = float(levels(canvas, jnp.array([30, 20]), False))
  assert got == _torch_vals(_nchw(content[None])) == 2.0 ** math.ceil(math.log2(count))
  rgb_to_gray = degradations.rgb_to_grayscale
  gray_ref = _torch_vals(rgb_to_gray(_nchw(content[None])))
  assert float(levels(canvas, jnp.array([30, 20]), True)) == gray_ref


def _gray_np(x: np.ndarray) -> np.ndarray:
  return (np.float32(0.2989) * x[..., 0] + np.float32(0.587) * x[..., 1]
          + np.float32(0.114) * x[..., 2])[..., None]


@pytest.mark.parametrize("method,n", [("table", 100), ("jax", 40)])
def test_poisson_noise_matches_basicsr_statistics(degradations, method, n):
  r = np.random.default_rng(3)
  h, w = 24, 24
  content = r.choice(np.arange(0, 256, 4), (h, w, 3)).astype(np.float32) / 255.0   # 64 levels
  scale = 1.7
  canvas = _canvas(content, (32, 28))
  keys = jax.random.split(jax.random.key(7), n)
  fn = jax.jit(jax.vmap(lambda k, g: noise_lib.poisson_noise(
      jnp.asarray(canvas), k, scale, g, (h, w), method=method), in_axes=(0, None)))
  levels = jax.jit(noise_lib.poisson_levels)
  for gray in (False, True):
    torch.manual_seed(0)
    batch = _nchw(np.broadcast_to(content, (n, h, w, 3)))
    ref = _nhwc(degradations.generate_poisson_noise_pt(
        batch, torch.full((n,), scale), torch.full((n,), float(gray))))
    out = np.asarray(fn(keys, gray))[:, :h, :w]
    ours = out - content
    assert np.all(np.isfinite(out))
    # Per-pixel variance (scale^2 q / vals) averaged over pixels, and the mean (0).
    var_ours, var_ref = ours.var(0).mean(), ref.var(0).mean()
    assert abs(var_ours / var_ref - 1) < 0.05, (gray, var_ours, var_ref)
    se = math.sqrt(var_ref / ours.size) * (3 if gray else 1)
    assert abs(ours.mean()) < 5 * se and abs(ref.mean()) < 5 * se
    # The levels rule: (noise / scale + q) * vals is a whole number of counts.
    q = np.round((_gray_np(content) if gray else content) * 255) / 255
    vals = float(levels(content, None, gray))
    counts = (ours / scale + q) * vals
    np.testing.assert_allclose(counts, np.round(counts), atol=2e-3)
    # Same share of zero counts (noise == -q * scale) as BasicSR.
    zero_ours = np.mean(np.round(counts) == 0)
    zero_ref = np.mean(np.abs(ref / scale + q) * vals < 0.5)
    assert abs(zero_ours - zero_ref) < 0.015, (zero_ours, zero_ref)
    if gray:   # one field on all channels (up to the rounding of image + noise)
      noise = out - canvas[None, :h, :w]
      np.testing.assert_allclose(noise[..., 1], noise[..., 0], atol=3e-7, rtol=0)
      np.testing.assert_allclose(noise[..., 2], noise[..., 0], atol=3e-7, rtol=0)


def test_poisson_table_sampler_distribution():
  """The CDF table against scipy's float64 Poisson, and a large-sample histogram."""
  stats = pytest.importorskip("scipy.stats")
  for vals in (1.0, 8.0, 256.0):
    table = np.asarray(noise_lib.poisson_cdf_table(jnp.float32(vals)), np.float64)
    lam = (np.arange(256, dtype=np.float32) / np.float32(255) * np.float32(vals)).astype(np.float64)
    exact = stats.poisson.cdf(np.arange(table.shape[1])[None], lam[:, None])
    assert np.abs(table - exact).max() < 5e-6, vals
  n = 400_000
  for level in (3, 128, 255):
    levels = jnp.full((n,), level, jnp.int32)
    counts = np.asarray(jax.jit(noise_lib._poisson_by_inversion)(jax.random.key(level), levels,
                                                          jnp.float32(256)))
    lam = level / 255 * 256
    k = np.arange(int(lam + 8 * math.sqrt(lam) + 10))
    pmf = stats.poisson.pmf(k, lam)
    emp = np.bincount(counts, minlength=k.size)[:k.size] / n
    assert np.all(np.abs(emp - pmf) < 5 * np.sqrt(pmf * (1 - pmf) / n) + 1e-5), level
    assert abs(counts.mean() - lam) < 5 * math.sqrt(lam / n)


# ----------------------------------------------------------------------------------
# USM and quantisation
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fft", "separable"])
def test_usm_sharp_matches_basicsr(rng, img_util, method):
  images = np.clip(rng.uniform(0, 1, (2, 64, 56, 3)) ** 3 + 0.2 * (np.arange(56) % 7 == 0)[:, None],
                   0, 1).astype(np.float32)
  usm = img_util.USMSharp()
  ref = _nhwc(usm(_nchw(images)))
  fn = jax.jit(jax.vmap(lambda x, s: ops.usm_sharp(x, size=s, method=method)))
  out = np.asarray(fn(images, jnp.array([[64, 56], [64, 56]])))
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
  # On a canvas: the content equals USMSharp of the cropped content.
  canvas = np.stack([_canvas(images[0, :40, :30], (64, 56)), _canvas(images[1], (64, 56))])
  out = np.asarray(fn(canvas, jnp.array([[40, 30], [64, 56]])))
  ref = _nhwc(usm(_nchw(images[:1, :40, :30])))[0]
  np.testing.assert_allclose(out[0, :40, :30], ref, atol=1e-5, rtol=0)


def test_quantize_uint8():
  x = jnp.array([-0.1, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 1.3], jnp.float32)
  ref = torch.clamp((torch.from_numpy(np.array(x)) * 255.0).round(), 0, 255) / 255.
  np.testing.assert_array_equal(np.asarray(ops.quantize_uint8(x)), ref.numpy())

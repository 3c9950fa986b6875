"""The parameterised pipeline against PyTorch / BasicSR ops in Real-ESRGAN's order.

blur (full size) -> area down -> noise -> clamp -> DiffJPEG (small image) -> 8-bit ->
bicubic back to the input size. Each case is a restoration prompt, so the reference
applies exactly what the prompt says; the noise field is rebuilt from the example's key
(`parameterized.noise_field`), so both sides add the same noise.
"""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.fixtures.basicsr_ref import load_basicsr_module
from tip_jax.degrade import kernels, parameterized, prompts

CONFIG = parameterized.TIPConfig()
SIZE = (56, 72)   # small sizes 22x28 (2.5x), 18x24 (3x), 14x18 (4x): not multiples of 16


@pytest.fixture(scope="module")
def reference():
  process = load_basicsr_module("utils/img_process_util.py")
  degradations = load_basicsr_module("data/degradations.py")
  jpeg = load_basicsr_module("utils/diffjpeg.py").DiffJPEG(differentiable=False)
  return process.filter2D, degradations.bivariate_Gaussian, jpeg


def _images(n: int, seed: int = 0) -> np.ndarray:
  r = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:SIZE[0], 0:SIZE[1]]
  yy, xx = yy / (SIZE[0] - 1), xx / (SIZE[1] - 1)
  smooth = np.stack([xx, yy, 0.5 + 0.4 * np.sin(9 * xx * yy)], -1)
  return np.clip(smooth[None] + 0.1 * r.standard_normal((n, *SIZE, 3)), 0, 1).astype(np.float32)


def _apply(images: np.ndarray, texts: list[str], seeds: list[int],
           bucketed: bool = False) -> np.ndarray:
  """vmap, or with `bucketed` canvases `lax.map` (as `pipeline.degrade` would pair them)."""
  stages = [prompts.parse(t, CONFIG.ranges, CONFIG.defaults) for t in texts]
  params = parameterized.to_arrays(stages)
  keys = jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32))
  one = lambda args: parameterized.apply(*args, CONFIG, bucketed=bucketed)
  loop = (lambda args: jax.lax.map(one, args)) if bucketed else jax.vmap(one)
  return np.asarray(jax.jit(loop)((images, params, keys)))


def _to_torch(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))


@torch.no_grad()
def _torch_pipeline(image: np.ndarray, text: str, seed: int, reference) -> np.ndarray:
  filter2d, gaussian_kernel, jpeg = reference
  s = prompts.parse(text, CONFIG.ranges, CONFIG.defaults)
  as_f32 = lambda v: np.float32(v)    # the device sees the float32 values of to_arrays
  x = _to_torch(image)
  if s.blur_sigma is not None:
    sigma = as_f32(s.blur_sigma)
    k = gaussian_kernel(kernels.KERNEL_SIZE, sigma, sigma, 0, isotropic=True)
    x = filter2d(x, torch.from_numpy(k.astype(np.float32))[None])
  if s.downsample is not None:   # F.interpolate sizes it floor(n * float32(1 / f))
    scale = float(np.float32(1) / as_f32(s.downsample))
    x = F.interpolate(x, scale_factor=scale, mode="area")
  if s.noise_sigma is not None:
    field = parameterized.noise_field(jax.random.key(seed), (*image.shape[:2], 3))
    field = _to_torch(np.asarray(field))[:, :, :x.shape[2], :x.shape[3]]
    x = torch.clamp(x + field * torch.tensor(as_f32(s.noise_sigma)), 0, 1)
  if s.jpeg_quality is not None:
    x = jpeg(torch.clamp(x, 0, 1), quality=torch.tensor([float(as_f32(s.jpeg_quality))]))
  x = torch.clamp(torch.round(x * 255), 0, 255) / 255
  if s.downsample is not None:
    x = torch.clamp(F.interpolate(x, size=image.shape[:2], mode="bicubic"), 0, 1)
  return x[0].numpy().transpose(1, 2, 0)


def test_downsample_then_noise_on_the_small_image():
  """"Upsample to 4.0x; Denoise with sigma 0.05;" = area /4 -> noise on the small image
  (the same field) -> 8-bit -> bicubic x4, in float32 (measured max diff 2.4e-7)."""
  image = _images(1)
  ours = _apply(image, ["Upsample to 4.0x; Denoise with sigma 0.05;"], [7])[0]
  x = F.interpolate(_to_torch(image[0]), scale_factor=0.25, mode="area")
  assert x.shape[2:] == (SIZE[0] // 4, SIZE[1] // 4)
  field = _to_torch(np.asarray(parameterized.noise_field(jax.random.key(7), (*SIZE, 3))))
  x = torch.clamp(x + field[:, :, :x.shape[2], :x.shape[3]] * torch.tensor(np.float32(0.05)), 0, 1)
  x = torch.clamp(torch.round(x * 255), 0, 255) / 255
  ref = torch.clamp(F.interpolate(x, size=SIZE, mode="bicubic", align_corners=False), 0, 1)
  np.testing.assert_allclose(ours, ref[0].numpy().transpose(1, 2, 0), rtol=0, atol=1e-6)


CASES = [
    "Deblur with sigma 1.5; Upsample to 2.5x; Denoise with sigma 0.05; Dejpeg with quality 40;",
    "Deblur with sigma 2.0; Upsample to 3.0x; Dejpeg with quality 60;",
    "Upsample to 4.0x; Denoise with sigma 0.1;",
    "Deblur with sigma 0.8; Denoise with sigma 0.03; Dejpeg with quality 75;",
    "Upsample to 1.7x; Dejpeg with quality 30;",
    "Upsample to 3.3x; Denoise with sigma 0.12; Dejpeg with quality 50;",
    "Deblur with sigma 3.0; Upsample to 2.5x;",
    "Upsample to 2.0x; Denoise with sigma 0.02; Dejpeg with quality 90;",
    "",
]


@pytest.mark.parametrize("bucketed", [False, True])
def test_each_stage_matches_basicsr_ops(reference, bucketed):
  """Every factor bucket (none, [1, 2), [2, 3), >= 3) on the (H, W) or a smaller canvas."""
  images = _images(len(CASES), seed=1)
  seeds = list(range(100, 100 + len(CASES)))
  ours = _apply(images, CASES, seeds, bucketed)
  for i, text in enumerate(CASES):
    err = np.abs(ours[i] - _torch_pipeline(images[i], text, seeds[i], reference))
    if "Dejpeg" in text:
      # float32 op order could move a DiffJPEG coefficient or an 8-bit level across its
      # rounding boundary (a whole block then moves), so a few values may differ;
      # measured: none do, max 8.3e-7 over every case.
      assert np.mean(err <= 1e-4) >= 0.99 and np.median(err) <= 1e-6, (text, err.max())
    else:
      assert err.max() <= 1e-5, (text, err.max())   # measured max 6.6e-7


def test_noise_on_the_small_image_is_upsampled_with_it():
  """The noise statistics tell the order apart: at full size the residual of a flat
  image is white with std sigma; drawn on the 4x smaller image and brought back up by
  bicubic it is smooth (neighbours correlated) and its std drops."""
  flat = np.full((2, 64, 64, 3), 0.5, np.float32)
  out = _apply(flat, ["Denoise with sigma 0.05;", "Upsample to 4.0x; Denoise with sigma 0.05;"],
               [3, 3]) - 0.5
  lag1 = lambda r: np.corrcoef(r[:, :-1].ravel(), r[:, 1:].ravel())[0, 1]
  full, small = out
  assert abs(full.std() - 0.05) < 0.005 and abs(lag1(full)) < 0.05   # 0.0507, 0.0004
  assert 0.03 < small.std() < 0.047 and lag1(small) > 0.8   # measured 0.041, 0.92


def test_jpeg_clamps_its_input_first(reference):
  """An input above 1 (bicubic overshoot upstream) is clamped before DiffJPEG, as
  BasicSR does, not compressed with its overshoot."""
  image = _images(1, seed=2)
  image[0, :8, :8] = 1.5
  text = "Dejpeg with quality 40;"
  err = np.abs(_apply(image, [text], [0])[0] - _torch_pipeline(image[0], text, 0, reference))
  assert np.mean(err <= 1e-4) >= 0.99

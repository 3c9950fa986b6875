"""PSNR and SSIM equal BasicSR's and scikit-image's on real photographs.

Measured float32 max abs differences over the 6 degraded crops and all four
crop_border/y_channel variants: vs BasicSR PSNR 4.1e-6 dB, SSIM 1.2e-7; vs
scikit-image PSNR 3.8e-6 dB, SSIM 1.2e-7. scikit-image's SSIM drops (11 - 1) // 2 = 5
pixels from each edge of its map, which is BasicSR's 'valid' region, so there is no
border difference: the two references agree to 3e-14 on RGB; on Y they differ by up to
5.7e-7 dB and 3e-8 SSIM because BasicSR rounds its Y channel through float32.
"""

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.metrics

from tests.fixtures import photos
from tests.fixtures.basicsr_ref import load_basicsr_module
from tip_jax.metrics import pixel

VARIANTS = [(0, False), (4, False), (0, True), (4, True)]


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
  """(degraded, clean) uint8 batches: three photos with noise, the same three blurred."""
  clean = photos.crops()
  degraded = np.concatenate([photos.degrade(clean, noise=15 / 255),
                             photos.degrade(clean, blur=1.5)])
  return degraded, np.concatenate([clean, clean])


def _ours(pairs, metric, crop_border, y_channel):
  degraded, clean = (jnp.asarray(photos.to_unit(x)) for x in pairs)
  return np.asarray(metric(degraded, clean, crop_border=crop_border, y_channel=y_channel))


def _basicsr(pairs, name, crop_border, y_channel):
  """BasicSR on HWC uint8 images; its Y conversion expects BGR, as cv2 reads them."""
  fn = getattr(load_basicsr_module("metrics/psnr_ssim.py"), f"calculate_{name}")
  flip = (lambda im: im[..., ::-1]) if y_channel else (lambda im: im)
  return np.array([fn(flip(a), flip(b), crop_border, input_order="HWC", test_y_channel=y_channel)
                   for a, b in zip(*pairs)])


def _skimage_inputs(images, crop_border, y_channel):
  """float64 [0, 255] images, cropped, and as MATLAB BT.601 luma (H, W) if asked."""
  out = images.astype(np.float64)
  if crop_border:
    out = out[:, crop_border:-crop_border, crop_border:-crop_border]
  if y_channel:
    out = 16.0 + out @ np.array([65.481, 128.553, 24.966]) / 255.0
  return out


@pytest.mark.parametrize("crop_border,y_channel", VARIANTS)
def test_psnr_matches_basicsr_and_skimage(pairs, crop_border, y_channel):
  ours = _ours(pairs, pixel.psnr, crop_border, y_channel)
  np.testing.assert_allclose(ours, _basicsr(pairs, "psnr", crop_border, y_channel), rtol=0,
                             atol=1e-4)
  degraded, clean = (_skimage_inputs(x, crop_border, y_channel) for x in pairs)
  sk = [skimage.metrics.peak_signal_noise_ratio(b, a, data_range=255)
        for a, b in zip(degraded, clean)]
  np.testing.assert_allclose(ours, sk, rtol=0, atol=1e-4)
  assert 20 < ours.min() and ours.max() < 40  # non-trivial degradations


@pytest.mark.parametrize("crop_border,y_channel", VARIANTS)
def test_ssim_matches_basicsr_and_skimage(pairs, crop_border, y_channel):
  ours = _ours(pairs, pixel.ssim, crop_border, y_channel)
  np.testing.assert_allclose(ours, _basicsr(pairs, "ssim", crop_border, y_channel), rtol=0,
                             atol=1e-5)
  degraded, clean = (_skimage_inputs(x, crop_border, y_channel) for x in pairs)
  sk = [skimage.metrics.structural_similarity(
      a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
      channel_axis=None if y_channel else -1) for a, b in zip(degraded, clean)]
  np.testing.assert_allclose(ours, sk, rtol=0, atol=1e-5)
  assert 0.3 < ours.min() and ours.max() < 0.95


def test_window_is_cv2_gaussian():
  np.testing.assert_allclose(pixel.gaussian_taps(), cv2.getGaussianKernel(11, 1.5)[:, 0],
                             rtol=0, atol=1e-15)


def test_identical_images():
  """BasicSR's PSNR of identical images is inf, and so is ours; SSIM is exactly 1."""
  clean = jnp.asarray(photos.to_unit(photos.crops()))
  assert np.all(np.isinf(np.asarray(pixel.psnr(clean, clean, y_channel=True))))
  np.testing.assert_allclose(pixel.ssim(clean, clean, crop_border=2), 1.0, rtol=0, atol=1e-6)


def test_stronger_degradation_scores_worse():
  """On each photo, more noise (5, 15, 30 / 255) and more blur (1, 2, 3 px) lower both."""
  clean = photos.crops()
  ref = jnp.asarray(photos.to_unit(clean))
  for series in ([dict(noise=s / 255) for s in (5, 15, 30)],
                 [dict(blur=s) for s in (1.0, 2.0, 3.0)]):
    degraded = [jnp.asarray(photos.to_unit(photos.degrade(clean, **kw))) for kw in series]
    for metric in (pixel.psnr, pixel.ssim):
      scores = np.stack([np.asarray(metric(d, ref)) for d in degraded])  # (level, photo)
      assert np.all(np.diff(scores, axis=0) < 0), (metric.__name__, series, scores)


def test_rejects_unusable_shapes():
  image = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(ValueError, match="one shape"):
    pixel.psnr(image, image[:, :8])
  with pytest.raises(ValueError, match="leaves nothing"):
    pixel.psnr(image, image, crop_border=8)
  with pytest.raises(ValueError, match="at least 11x11"):
    pixel.ssim(image, image, crop_border=3)

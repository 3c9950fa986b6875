"""The whole Real-ESRGAN chain against BasicSR's ops run in Real-ESRGAN's `feed_data` order.

Noise is switched off (sigma 0), so both sides are deterministic; everything else —
USM, per-example kernels, scale-factor and size resizes on canvases, DiffJPEG twice,
the final [resize + sinc] / JPEG order, 8-bit rounding and the bicubic way back —
comes from `sample_params` and is replayed in PyTorch one example at a time.
"""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.fixtures.basicsr_ref import load_basicsr_module
from tip_jax.degrade import DegradeConfig, kernels, realesrgan, sample_params

SIZE = 64


@pytest.fixture(scope="module")
def reference():
  process = load_basicsr_module("utils/img_process_util.py")
  jpeg = load_basicsr_module("utils/diffjpeg.py").DiffJPEG(differentiable=False)
  return process.filter2D, process.USMSharp(), jpeg


@torch.no_grad()
def _torch_chain(image: np.ndarray, p: dict, config, reference) -> np.ndarray:
  filter2d, usm, jpeg = reference
  kernel = lambda k: torch.from_numpy(np.array(kernels.make_kernel(**k)))[None]
  mode = lambda m: realesrgan.MODES[int(m)]
  size = lambda s: tuple(int(v) for v in s)
  x = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())
  x = usm(x) if config.usm else x
  x = filter2d(x, kernel(p["first"]["kernel"]))
  x = F.interpolate(x, scale_factor=float(p["first"]["scale"]), mode=mode(p["first"]["mode"]))
  x = jpeg(torch.clamp(x, 0, 1), quality=torch.tensor([float(p["first"]["quality"])]))
  if p["second"]["blur_on"]:
    x = filter2d(x, kernel(p["second"]["kernel"]))
  x = torch.clamp(F.interpolate(x, size=size(p["second"]["size"]), mode=mode(p["second"]["mode"])),
                  0, 1)
  final = (SIZE // config.scale,) * 2
  q2 = torch.tensor([float(p["second"]["quality"])])
  if p["sinc_first"]:
    x = F.interpolate(x, size=final, mode=mode(p["final_mode"]))
    x = jpeg(torch.clamp(filter2d(x, kernel(p["final_kernel"])), 0, 1), quality=q2)
  else:
    x = F.interpolate(jpeg(torch.clamp(x, 0, 1), quality=q2), size=final,
                      mode=mode(p["final_mode"]))
    x = filter2d(x, kernel(p["final_kernel"]))
  lq = torch.clamp(torch.round(x * 255), 0, 255) / 255
  up = torch.clamp(F.interpolate(lq, size=(SIZE, SIZE), mode="bicubic"), 0, 1)
  return up[0].detach().numpy().transpose(1, 2, 0)


def test_chain_matches_basicsr_ops(reference):
  config = DegradeConfig(size=(SIZE, SIZE), realesrgan_prob=1.0)
  params, _ = sample_params(5, 12, config)
  silent = params.realesrgan._replace(
      first=params.realesrgan.first._replace(poisson=np.zeros(12, bool),
                                             sigma=np.zeros(12, np.float32)),
      second=params.realesrgan.second._replace(poisson=np.zeros(12, bool),
                                               sigma=np.zeros(12, np.float32)))
  r = np.random.default_rng(0)
  yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
  smooth = np.stack([xx, yy, 0.5 + 0.4 * np.sin(9 * xx * yy)], -1)
  images = np.clip(smooth[None] + 0.15 * r.standard_normal((12, SIZE, SIZE, 3)), 0, 1)
  images = images.astype(np.float32)
  ours = np.asarray(jax.jit(jax.vmap(
      lambda x, p: realesrgan.apply(x, p, jax.random.key(0), config.realesrgan)))(images, silent))
  errors = []
  for i in range(12):
    p = jax.tree.map(lambda v: np.asarray(v)[i], silent._asdict())
    p = {k: (v._asdict() if hasattr(v, "_asdict") else v) for k, v in p.items()}
    ref = _torch_chain(images[i], p, config.realesrgan, reference)
    errors.append(np.abs(ours[i] - ref))
  errors = np.stack(errors)
  # float32 op-order differences can move a value across a JPEG or 8-bit rounding
  # boundary (then a whole 8x8/16x16 block moves); everything else agrees to ~1e-6.
  # measured: 99.91% of values within 1e-4, median 3e-8, max 3.7e-3 (one 8-bit step)
  assert np.mean(errors <= 1e-4) >= 0.99
  assert np.median(errors) <= 1e-6

"""Degradation throughput: tip_jax (jit, per-example params) vs BasicSR's PyTorch ops.

    python benchmarks/degrade.py                 # 512x512, batch 16, x4plus values

The reference replays Real-ESRGAN's `feed_data` with BasicSR 1.4.2's own functions
(USMSharp, filter2D, F.interpolate, random_add_{gaussian,poisson}_noise_pt, DiffJPEG),
kernels made beforehand as its dataset workers do, one random draw per batch as it
does. TIP's parameterised pipeline has no public implementation; its reference is the
same four stages in the same order (noise and JPEG on the downsampled image), written
with the same PyTorch/BasicSR ops. Prints one JSON object with images/s for each side
and the ratios (ours / reference; above 1 is faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import random
import sys
import time

import jax
import numpy as np
import torch
import torch.nn.functional as F

# The repository root first: the test helper below lives in tests/fixtures, and tip_jax
# is then this tree's (not whichever checkout is pip-installed).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from forward import machine  # noqa: E402  (benchmarks/, the script's directory)
from tests.fixtures.basicsr_ref import load_basicsr_module  # noqa: E402  (BasicSR by file path)
from tip_jax.degrade import DegradeConfig, degrade, kernels, parameterized, realesrgan  # noqa: E402
from tip_jax.degrade import sample_params  # noqa: E402


def reference_realesrgan(gt, k1, k2, sinc, opt: realesrgan.RealESRGANConfig, bsr):
  """Real-ESRGAN's second-order chain on a batch, one draw per batch."""
  process, deg, jpeger, usm = bsr
  h, w = gt.shape[2:]
  out = process.filter2D(usm(gt) if opt.usm else gt, k1)
  for second in (False, True):
    sfx = "2" if second else ""
    o = lambda name: getattr(opt, name + sfx)
    if second and random.random() < opt.second_blur_prob:
      out = process.filter2D(out, k2)
    kind = random.choices(["up", "down", "keep"], o("resize_prob"))[0]
    s = {"up": random.uniform(1, o("resize_range")[1]),
         "down": random.uniform(o("resize_range")[0], 1), "keep": 1.0}[kind]
    mode = random.choice(realesrgan.MODES)
    if second:
      out = F.interpolate(out, size=(int(h / opt.scale * s), int(w / opt.scale * s)), mode=mode)
    else:
      out = F.interpolate(out, scale_factor=s, mode=mode)
    if random.random() < o("gaussian_noise_prob"):
      out = deg.random_add_gaussian_noise_pt(out, sigma_range=o("noise_range"), clip=True,
                                             rounds=False, gray_prob=o("gray_noise_prob"))
    else:
      out = deg.random_add_poisson_noise_pt(out, scale_range=o("poisson_scale_range"),
                                            gray_prob=o("gray_noise_prob"), clip=True,
                                            rounds=False)
    if not second:
      q = out.new_zeros(out.size(0)).uniform_(*opt.jpeg_range)
      # .contiguous(): DiffJPEG returns a strided view that BasicSR's filter2D cannot
      # .view(); Real-ESRGAN's CUDA path gets a contiguous tensor here.
      out = jpeger(torch.clamp(out, 0, 1), quality=q).contiguous()
  q = out.new_zeros(out.size(0)).uniform_(*opt.jpeg_range2)
  final = (h // opt.scale, w // opt.scale)
  if random.random() < 0.5:
    out = process.filter2D(F.interpolate(out, size=final, mode=random.choice(realesrgan.MODES)),
                           sinc)
    out = jpeger(torch.clamp(out, 0, 1), quality=q)
  else:
    out = jpeger(torch.clamp(out, 0, 1), quality=q).contiguous()
    out = process.filter2D(F.interpolate(out, size=final, mode=random.choice(realesrgan.MODES)),
                           sinc)
  lq = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
  return torch.clamp(F.interpolate(lq, size=(h, w), mode="bicubic"), 0, 1)


def reference_parameterized(gt, blur_kernels, cfg: parameterized.TIPConfig, bsr):
  """The four stages, each with p = cfg.stage_prob (one draw per batch), in Real-ESRGAN's
  order as `parameterized.apply` runs them: noise and JPEG on the downsampled image,
  8-bit rounding, then bicubic back to the input size."""
  process, deg, jpeger, _ = bsr
  h, w = gt.shape[2:]
  out = gt
  if random.random() < cfg.stage_prob:
    out = process.filter2D(out, blur_kernels)
  down = random.random() < cfg.stage_prob
  if down:
    f = random.uniform(*cfg.downsample)
    out = F.interpolate(out, size=(int(h / f), int(w / f)), mode="area")
  if random.random() < cfg.stage_prob:
    out = deg.random_add_gaussian_noise_pt(out, sigma_range=[255 * s for s in cfg.noise_sigma],
                                           clip=True, rounds=False, gray_prob=0)
  if random.random() < cfg.stage_prob:
    q = out.new_zeros(out.size(0)).uniform_(*cfg.jpeg_quality)
    out = jpeger(torch.clamp(out, 0, 1), quality=q)
  out = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
  if down:
    out = torch.clamp(F.interpolate(out, size=(h, w), mode="bicubic"), 0, 1)
  return out


def images_per_second(fn, batch: int, repeats: int) -> float:
  fn()
  start = time.perf_counter()
  for _ in range(repeats):
    fn()
  return batch * repeats / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no-usm", action="store_true",
                      help="skip the USM sharpening of the input on both sides (Real-ESRGAN "
                           "sharpens; its 51x51 grouped conv dominates the reference on CPU)")
  args = parser.parse_args()
  b, s = args.batch, args.size
  config = DegradeConfig(size=(s, s), realesrgan=dataclasses.replace(
      realesrgan.RealESRGANConfig.x4plus(), usm=not args.no_usm))
  process = load_basicsr_module("utils/img_process_util.py")
  bsr = (process, load_basicsr_module("data/degradations.py"),
         load_basicsr_module("utils/diffjpeg.py").DiffJPEG(differentiable=False),
         process.USMSharp())
  random.seed(0)
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (b, s, s, 3)).astype(np.float32)
  gt = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

  esr_cfg, tip_cfg = config.realesrgan, config.tip
  stack = lambda draws: torch.from_numpy(np.array(kernels.make_kernels(
      kernels.stack_kernels(draws))))
  k1 = stack([kernels.sample_blur_kernel(rng, esr_cfg.kernel_list, esr_cfg.kernel_prob,
                                         esr_cfg.blur_sigma, esr_cfg.betag_range,
                                         esr_cfg.betap_range, esr_cfg.sinc_prob)
              for _ in range(b)])
  sinc = stack([kernels.sample_final_sinc(rng, esr_cfg.final_sinc_prob) for _ in range(b)])
  blur = stack([kernels.gaussian_kernel_params(rng.uniform(*tip_cfg.blur_sigma))
                for _ in range(b)])

  run = jax.jit(degrade)
  ours, draws = {}, {}
  for name, prob in (("realesrgan", 1.0), ("parameterized", 0.0), ("mixed_degrade", 0.5)):
    draws[name], _ = sample_params(0, b, dataclasses.replace(config, realesrgan_prob=prob))
    ours[name] = lambda p=draws[name]: run(images, p).block_until_ready()
  # The parameterised pipeline alone under lax.map with its factor-bucketed canvases (what
  # `degrade`'s "map" loop runs, without its per-example switch between the two
  # pipelines); same draws as the "parameterized" row.
  bucketed = jax.jit(lambda x, p, k: jax.lax.map(
      lambda a: parameterized.apply(*a, tip_cfg, bucketed=True), (x, p, k)))
  keys = jax.random.split(jax.random.key(0), b)
  tip_draws = draws["parameterized"].tip
  ours["parameterized_bucketed"] = lambda: bucketed(images, tip_draws, keys).block_until_ready()
  with torch.no_grad():
    ref = {
        "realesrgan": lambda: reference_realesrgan(gt, k1, k1, sinc, esr_cfg, bsr),
        "parameterized": lambda: reference_parameterized(gt, blur, tip_cfg, bsr),
    }
    result = {name: images_per_second(fn, b, args.repeats) for name, fn in ref.items()}
  report = {"benchmark": "degradation images/s", "ours": {}, "reference": {}, "ratio": {}}
  for name, fn in ours.items():
    report["ours"][name] = round(images_per_second(fn, b, args.repeats), 2)
  for name, value in result.items():
    report["reference"][name] = round(value, 2)
  for name in ours:
    value = result.get(name.removesuffix("_bucketed"))
    if value is not None:
      report["ratio"][name] = round(report["ours"][name] / value, 2)
  report["config"] = {"size": s, "batch": b, "repeats": args.repeats, "preset": "x4plus",
                      "usm": esr_cfg.usm, "loop": config.loop,
                      "canvases": esr_cfg.canvases(s, s)}
  report["machine"] = machine()
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()

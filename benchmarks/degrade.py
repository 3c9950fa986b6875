"""Degradation throughput: tip_jax (jit, per-example params) vs BasicSR's PyTorch ops.

    python benchmarks/degrade.py                 # 512x512, batch 16, x4plus values, 1 thread

The reference replays Real-ESRGAN's `feed_data` with BasicSR 1.4.2's own functions
(USMSharp, filter2D, F.interpolate, random_add_{gaussian,poisson}_noise_pt, DiffJPEG),
kernels made beforehand as its dataset workers do, one random draw per batch as it
does. TIP's parameterised pipeline has no public implementation; its reference is the
same four stages in the same order (noise and JPEG on the downsampled image), written
with the same PyTorch/BasicSR ops, and the mixed one picks either pipeline per batch
(the paper's per-iteration mix; ours mixes per example).

Steady state: each side is warmed up (ours: compiled), then both are timed batch by
batch, alternating, every batch with fresh draws on both sides (ours: `sample_params`
with a new seed; the reference: new kernels and its own random choices), until a side
has run `--seconds` or `--batches` batches, and at least `--min-batches`. One thread
per side by default (`--threads`). Prints one JSON object: per pipeline and side the
median seconds per batch and its interquartile range, and images/s over all timed
batches; the ratio (ours / reference images/s; above 1 is faster) uses the latter,
since the reference's per-batch draws (a stage on or off for the whole batch) make its
batch times bimodal where ours mix within each batch.
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
from forward import add_threads_flag, limit_threads, machine  # noqa: E402  (benchmarks/)
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


def reference_kernels(rng: np.random.Generator, b: int, config: DegradeConfig) -> dict:
  """One batch's kernels for the reference, drawn as Real-ESRGAN's dataset workers do:
  first- and second-round blur kernels, the final sinc, TIP's Gaussian blur."""
  esr, tip = config.realesrgan, config.tip
  stack = lambda draws: torch.from_numpy(np.array(kernels.make_kernels(
      kernels.stack_kernels(draws))))
  blur = lambda second: kernels.sample_blur_kernel(
      rng, esr.kernel_list, esr.kernel_prob, esr.blur_sigma2 if second else esr.blur_sigma,
      esr.betag_range2 if second else esr.betag_range,
      esr.betap_range2 if second else esr.betap_range, esr.sinc_prob2 if second else esr.sinc_prob)
  return {"k1": stack([blur(False) for _ in range(b)]),
          "k2": stack([blur(True) for _ in range(b)]),
          "sinc": stack([kernels.sample_final_sinc(rng, esr.final_sinc_prob) for _ in range(b)]),
          "blur": stack([kernels.gaussian_kernel_params(rng.uniform(*tip.blur_sigma))
                         for _ in range(b)])}


def summary(times: list[float], batch: int) -> dict:
  """Median and interquartile range of the seconds per batch, images/s over them all."""
  return {"median_s": round(float(np.median(times)), 4),
          "iqr_s": [round(float(np.percentile(times, q)), 4) for q in (25, 75)],
          "batches": len(times), "images_per_s": round(batch * len(times) / sum(times), 2)}


def time_side_by_side(ours, reference, args) -> tuple[list[float], list[float]]:
  """Seconds per batch of `ours(i)` and `reference(i)` (batch i's draws), alternating
  after two warm-up batches each, until each side has run --seconds or --batches
  batches (and at least --min-batches)."""
  for i in range(2):
    ours(i)
    reference(i)
  times = {"ours": [], "reference": []}
  done = lambda t: len(t) >= args.min_batches and (sum(t) >= args.seconds or
                                                   len(t) >= args.batches)
  i = 2
  while not (done(times["ours"]) and done(times["reference"])):
    for side, fn in (("ours", ours), ("reference", reference)):
      if not done(times[side]):
        start = time.perf_counter()
        fn(i)
        times[side].append(time.perf_counter() - start)
    i += 1
  return times["ours"], times["reference"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per side")
  parser.add_argument("--batches", type=int, default=20, help="or this many timed batches")
  parser.add_argument("--min-batches", type=int, default=5, help="but at least this many")
  parser.add_argument("--no-usm", action="store_true",
                      help="skip the USM sharpening of the input on both sides (Real-ESRGAN "
                           "sharpens; its 51x51 grouped conv dominates the reference on CPU)")
  add_threads_flag(parser)
  parser.set_defaults(threads=1)
  args = parser.parse_args()
  limit_threads(args.threads)
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
  # A few input batches, cycled: the draws, not the pixels, are what must be fresh.
  images = [rng.uniform(0, 1, (b, s, s, 3)).astype(np.float32) for _ in range(4)]
  gts = [torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for x in images]
  # Every batch either side can time (two warm-ups, then at most this many) draws anew.
  most = 2 + max(args.batches, args.min_batches)
  ref_kernels = [reference_kernels(rng, b, config) for _ in range(most)]
  esr_cfg, tip_cfg = config.realesrgan, config.tip

  def reference_esr(i: int):
    k = ref_kernels[i]
    return reference_realesrgan(gts[i % 4], k["k1"], k["k2"], k["sinc"], esr_cfg, bsr)

  def reference_tip(i: int):
    return reference_parameterized(gts[i % 4], ref_kernels[i]["blur"], tip_cfg, bsr)

  def reference_mixed(i: int):
    return (reference_esr if random.random() < config.realesrgan_prob else reference_tip)(i)

  run = jax.jit(degrade)
  report = {"benchmark": "degradation images/s, steady state", "pipelines": {}}
  for name, prob, reference in (("realesrgan", 1.0, reference_esr),
                                ("parameterized", 0.0, reference_tip),
                                ("mixed_degrade", 0.5, reference_mixed)):
    cfg = dataclasses.replace(config, realesrgan_prob=prob)
    draws = [sample_params(1000 + i, b, cfg)[0] for i in range(most)]
    ours = lambda i, draws=draws: run(images[i % 4], draws[i]).block_until_ready()
    with torch.no_grad():
      ours_t, ref_t = time_side_by_side(ours, reference, args)
    row = {"ours": summary(ours_t, b), "reference": summary(ref_t, b)}
    row["ratio"] = round(row["ours"]["images_per_s"] / row["reference"]["images_per_s"], 2)
    report["pipelines"][name] = row
  report["config"] = {"size": s, "batch": b, "seconds": args.seconds, "batches": args.batches,
                      "min_batches": args.min_batches, "threads": args.threads,
                      "preset": "x4plus", "usm": esr_cfg.usm, "loop": config.loop,
                      "canvases": esr_cfg.canvases(s, s)}
  report["machine"] = machine()
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()

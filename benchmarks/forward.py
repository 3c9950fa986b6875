"""UNet + ControlNet forward: tip_jax (jit) vs diffusers (PyTorch), same weights, same machine.

    python benchmarks/forward.py                        # SD1.5 geometry at width x0.2, 256²
    python benchmarks/forward.py --width 1 --size 512   # full SD1.5 at 512² (slow on CPU)

Random weights are made in PyTorch and converted in memory with the library's own
converter, so both sides compute the same function; the script checks that before
timing. Prints one JSON object: seconds per forward for each side, their ratio
(ours / reference; below 1 is faster), the max abs difference, the config, the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import sys

import jax
import numpy as np
import torch

# diffusers and transformers import torchvision, whose registry wheel loads beside the CPU
# torch wheel only once tests/fixtures/torch_refs.py has declared two of its ops; every
# benchmark imports this module first.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.fixtures.torch_refs import torchvision  # noqa: E402

torchvision()

from tip_jax.convert.diffusers import convert_state_dict
from tip_jax.models import tip
from tip_jax.models.controlnet import ControlNetConfig, ControlNetModel
from tip_jax.models.layers import ModelOptions
from tip_jax.models.unet import UNet2DConditionModel, UNetConfig


def geometry(width: float, layers: int = 2) -> UNetConfig:
  """SD1.5's UNet with its widths scaled by `width` and `layers` resnets per level (SD1.5:
  2; 1 halves what is traced and compiled, for smoke runs such as the tests')."""
  channels = tuple(int(round(c * width / 32)) * 32 for c in UNetConfig.sd15().block_out_channels)
  return dataclasses.replace(UNetConfig.sd15(), block_out_channels=channels,
                             layers_per_block=layers)


def build_models(width: float, query_chunk: int | None, dtype: str = "float32",
                 layers: int = 2):
  """diffusers' SD1.5-geometry UNet + ControlNet (random, every ControlNet weight nudged
  so the residual path is really exercised) and ours with the same weights, computing in
  `dtype` (params stay float32 on our side; the caller casts the reference).

  Returns cfg, (ref_unet, ref_controlnet), (unet, controlnet), (unet_params, cn_params).
  """
  import diffusers  # test/benchmark-only reference
  cfg = geometry(width, layers)
  torch.manual_seed(0)
  ref_unet = diffusers.UNet2DConditionModel(
      block_out_channels=cfg.block_out_channels, attention_head_dim=cfg.attention_head_dim,
      cross_attention_dim=cfg.cross_attention_dim, layers_per_block=cfg.layers_per_block).eval()
  ref_cn = diffusers.ControlNetModel.from_unet(ref_unet).eval()
  with torch.no_grad():
    for p in ref_cn.parameters():
      p.add_(0.01 * torch.randn_like(p))
  options = ModelOptions(dtype=jax.numpy.dtype(dtype), attention_query_chunk=query_chunk or None)
  unet = UNet2DConditionModel(cfg, options)
  controlnet = ControlNetModel(ControlNetConfig(unet=cfg, conditioning="add", fusion="additive"),
                               options)
  numpy_state = lambda m: {k: v.numpy() for k, v in m.state_dict().items()}
  unet_params = convert_state_dict(numpy_state(ref_unet), unet, "unet")
  cn_params = convert_state_dict(numpy_state(ref_cn), controlnet, "controlnet")
  return cfg, (ref_unet, ref_cn), (unet, controlnet), (unet_params, cn_params)


def reference_predict(unet, controlnet, x: torch.Tensor, t, text: torch.Tensor,
                      cond: torch.Tensor) -> torch.Tensor:
  """diffusers' ControlNet residuals fed to its UNet: the reference of `tip.predict` with
  additive fusion (NCHW; call under `torch.no_grad()` when timing inference)."""
  down, mid = controlnet(x, t, text, cond, return_dict=False)
  return unet(x, t, text, down_block_additional_residuals=down,
              mid_block_additional_residual=mid).sample


def make_inputs(size: int, batch: int, cross_attention_dim: int):
  """Noisy latents, text states and a [0, 1] conditioning image (NHWC, float32)."""
  r = np.random.default_rng(0)
  lat = size // 8
  z = r.standard_normal((batch, lat, lat, 4), np.float32)
  text = r.standard_normal((batch, 77, cross_attention_dim), np.float32)
  cond = r.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
  return z, text, cond


def to_torch(x: np.ndarray) -> torch.Tensor:
  """NHWC numpy -> NCHW torch (text states, 3-D, pass through unchanged)."""
  x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
  return torch.from_numpy(np.ascontiguousarray(x))


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--threads", type=int, default=0,
                      help="CPU threads for PyTorch; 1 also pins the whole process to one core, "
                           "so XLA runs on one too (0 = each library's default). On a shared "
                           "machine use 1: PyTorch's 2 threads ran 35-125x slower here while "
                           "another process held a core")


def limit_threads(threads: int) -> None:
  """Applies --threads; call before JAX's backend starts (before any array is made).

  With 1, the process is pinned to one core: XLA:CPU sizes its thread pool from the
  cores it may use, and `--xla_cpu_multi_thread_eigen=false` alone leaves its YNNPACK
  matmuls and fusions on every core (a 512x532 by 532x1596 matmul took 1.85 CPU-seconds
  per wall second with that flag alone), which made "one thread each" two for us."""
  if not threads:
    return
  torch.set_num_threads(threads)
  if threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false").strip()
    if hasattr(os, "sched_setaffinity"):
      os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def cpu_model() -> str:
  """The CPU's model name (figures move 2x between the CPUs these machines get)."""
  if os.path.isfile("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  return platform.processor() or platform.machine()


def machine() -> dict:
  device = jax.devices()[0]
  return {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
          "jax": jax.__version__,
          "torch": torch.__version__, "device": str(device),
          "device_kind": device.device_kind,
          "torch_cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
          "torch_threads": torch.get_num_threads()}


# Dense bf16 peaks in TFLOP/s (vendor figures, no sparsity), by the start of JAX's
# `device_kind`: what an MFU is measured against.
PEAK_BF16_TFLOPS = {"NVIDIA H200": 989.4, "NVIDIA H100": 989.4, "NVIDIA A100": 312.0,
                    "NVIDIA L4": 121.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
                    "TPU v5p": 459.0, "TPU v5": 459.0, "TPU v6 lite": 918.0}


def peak_bf16_tflops() -> float:
  """This device's dense bf16 peak (`PEAK_BF16_TFLOPS`), 0 when unknown (a CPU)."""
  kind = jax.devices()[0].device_kind
  return next((v for k, v in PEAK_BF16_TFLOPS.items() if kind.startswith(k)), 0.0)


def reference_device() -> torch.device:
  """Where the PyTorch side runs: the GPU when JAX runs on one too (same chip, same
  process: a fair comparison), else the CPU."""
  on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
  return torch.device("cuda" if on_gpu else "cpu")


def timed(fn, repeats: int) -> float:
  fn()  # warm-up (and compile)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=float, default=0.2, help="channel multiplier vs SD1.5")
  parser.add_argument("--size", type=int, default=256, help="image side in pixels")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--query-chunk", type=int, default=128,
                      help="ModelOptions.attention_query_chunk (0 = off)")
  add_threads_flag(parser)
  args = parser.parse_args()
  limit_threads(args.threads)

  cfg, (ref_unet, ref_cn), (unet, controlnet), (unet_params, cn_params) = build_models(
      args.width, args.query_chunk)

  z, text, cond = make_inputs(args.size, args.batch, cfg.cross_attention_dim)
  t = np.full((args.batch,), 500)

  forward = jax.jit(lambda up, cp, *a: tip.predict(unet, controlnet, up, cp, *a))
  ours_fn = lambda: forward(unet_params, cn_params, z, t, text, text, cond).block_until_ready()

  tz, tc, tt, ttext = to_torch(z), to_torch(cond), torch.from_numpy(t), to_torch(text)

  def ref_fn():
    with torch.no_grad():
      return reference_predict(ref_unet, ref_cn, tz, tt, ttext, tc)

  start = time.perf_counter()
  ours_out = np.asarray(forward(unet_params, cn_params, z, t, text, text, cond))
  compile_s = time.perf_counter() - start
  diff = float(np.abs(ours_out - ref_fn().numpy().transpose(0, 2, 3, 1)).max())
  ours_s, ref_s = timed(ours_fn, args.repeats), timed(ref_fn, args.repeats)
  print(json.dumps({
      "benchmark": "unet+controlnet forward, fp32",
      "ours_s": round(ours_s, 3), "reference_s": round(ref_s, 3),
      "ratio_ours_over_reference": round(ours_s / ref_s, 3),
      "ours_first_call_incl_compile_s": round(compile_s, 1), "max_abs_diff": diff,
      "config": {"block_out_channels": cfg.block_out_channels, "size": args.size,
                 "batch": args.batch, "repeats": args.repeats,
                 "attention_query_chunk": args.query_chunk, "threads": args.threads or None},
      "machine": machine(),
  }, indent=2))


if __name__ == "__main__":
  main()

"""A whole DDIM sampling run: tip_jax (one jit, lax.scan) vs diffusers (PyTorch loop).

    python benchmarks/sample.py --width 0.2 --size 256 --steps 10   # reduced form
    python benchmarks/sample.py --width 1 --size 512 --steps 50     # SD1.5 at 512² (slow on CPU)
    python benchmarks/sample.py --width 1 --size 512 --steps 50 --cfg --batch 8 \
        --dtype bfloat16 --repeats 5                                # on a GPU (accelerator.sh)

Both sides run the same UNet + ControlNet (SD1.5 geometry scaled by --width, random
weights shared through the library's converter, see `forward.py`) for the same DDIM
steps from the same noise, `--batch` images per run, on the same device (a GPU when JAX
has one, else the CPU). After a warm-up (ours: compiled ahead of time, reported, then
one run; the reference: one step) each side makes `--repeats` runs, alternating, each from a fresh
noise draw shared by both; the final latents of the last pair are compared. Prints one
JSON object: median seconds per run and per image for each side, their ratio (ours /
reference; below 1 is faster), all run times, compile time, the latents' max abs
difference, the config and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from forward import (add_threads_flag, build_models, limit_threads, machine, make_inputs,
                     reference_device, reference_predict, to_torch)

from tip_jax.diffusion import samplers, schedules
from tip_jax.models import tip


def reference_denoise(unet, controlnet, x: torch.Tensor, t, text: torch.Tensor,
                      cond: torch.Tensor, rows: int, guidance: float) -> torch.Tensor:
  """diffusers' ControlNet + UNet output for NCHW latents x (B images) at timestep t, as its
  ControlNet pipeline computes it: `rows` copies of the batch (2: classifier-free
  guidance, the conditional rows first, text and cond given per row), guided back to B."""
  out = reference_predict(unet, controlnet, x.repeat(rows, 1, 1, 1), t, text, cond)
  n = x.shape[0]
  return out[n:] + guidance * (out[:n] - out[n:]) if rows == 2 else out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=float, default=0.2, help="channel multiplier vs SD1.5")
  parser.add_argument("--size", type=int, default=256, help="image side in pixels")
  parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
  parser.add_argument("--batch", type=int, default=1, help="images per sampling run")
  parser.add_argument("--layers", type=int, default=2, help="resnets per UNet level (SD1.5: 2)")
  parser.add_argument("--cfg", action="store_true",
                      help="classifier-free guidance: 2 rows per image per step on both sides")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--repeats", type=int, default=1, help="timed runs per side")
  parser.add_argument("--query-chunk", type=int, default=128,
                      help="ModelOptions.attention_query_chunk (0 = off)")
  add_threads_flag(parser)
  args = parser.parse_args()
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # both sides share a GPU
  limit_threads(args.threads)

  import diffusers  # benchmark-only reference
  cfg, (ref_unet, ref_cn), (unet, controlnet), (unet_params, cn_params) = build_models(
      args.width, args.query_chunk, args.dtype, args.layers)
  device, weight_dtype = reference_device(), getattr(torch, args.dtype)
  ref_unet, ref_cn = (m.to(device, weight_dtype) for m in (ref_unet, ref_cn))
  rows, n, guidance = (2 if args.cfg else 1), args.batch, 7.5
  _, text, cond = make_inputs(args.size, rows * n, cfg.cross_attention_dim)
  lat = args.size // 8

  config = schedules.sd_config()
  plan = samplers.make_plan(schedules.Schedule.from_config(config), args.steps, "ddim")

  def denoise(up, cp, x, t):
    out = tip.predict(unet, controlnet, up, cp, jnp.concatenate([x] * rows),
                      jnp.full((rows * n,), t), text, text, cond)
    return out[n:] + guidance * (out[:n] - out[n:]) if args.cfg else out

  run = jax.jit(lambda up, cp, x, p: samplers.sample(lambda x, t: denoise(up, cp, x, t), x, p))
  scheduler = diffusers.DDIMScheduler.from_config(config)
  ttext, tcond = (to_torch(a).to(device, weight_dtype) for a in (text, cond))

  def ref_fn(z: np.ndarray, steps: int) -> np.ndarray:
    scheduler.set_timesteps(steps)
    x = to_torch(z).to(device, weight_dtype)
    with torch.no_grad():
      for t in scheduler.timesteps:
        out = reference_denoise(ref_unet, ref_cn, x, t, ttext, tcond, rows, guidance)
        x = scheduler.step(out, t, x).prev_sample
    return x.float().cpu().numpy().transpose(0, 2, 3, 1)

  def clock(fn) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = np.asarray(fn())  # both sides hand back host arrays: the run has finished
    return time.perf_counter() - start, out

  rng = np.random.default_rng(0)
  noise = lambda: rng.standard_normal((n, lat, lat, 4), np.float32)  # noqa: E731
  start = time.perf_counter()
  compiled = run.lower(unet_params, cn_params, noise(), plan).compile()
  compile_s = time.perf_counter() - start
  np.asarray(compiled(unet_params, cn_params, noise(), plan))  # first-run allocations
  ref_fn(noise(), 1)
  times = {"ours": [], "reference": []}
  for _ in range(args.repeats):  # alternating, each pair from its own fresh noise
    z = noise()
    ours_s, ours_out = clock(lambda: compiled(unet_params, cn_params, z, plan))
    ref_s, ref_out = clock(lambda: ref_fn(z, args.steps))
    times["ours"].append(ours_s)
    times["reference"].append(ref_s)
  ours_s, ref_s = (float(np.median(times[k])) for k in ("ours", "reference"))
  print(json.dumps({
      "benchmark": f"{args.steps}-step DDIM, unet+controlnet, {args.dtype}",
      "ours_s": round(ours_s, 3), "reference_s": round(ref_s, 3),
      "ours_s_per_image": round(ours_s / n, 4), "reference_s_per_image": round(ref_s / n, 4),
      "ours_per_step_s": round(ours_s / args.steps, 4),
      "reference_per_step_s": round(ref_s / args.steps, 4),
      "ratio_ours_over_reference": round(ours_s / ref_s, 3),
      "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
      "ours_compile_s": round(compile_s, 1),
      "final_latent_max_abs_diff": float(np.abs(ours_out - ref_out).max()),
      "final_latent_max_abs": float(np.abs(ref_out).max()),
      "config": {"block_out_channels": cfg.block_out_channels, "layers": args.layers,
                 "size": args.size,
                 "steps": args.steps, "batch": n, "cfg_rows": rows, "dtype": args.dtype,
                 "repeats": args.repeats, "attention_query_chunk": args.query_chunk,
                 "threads": args.threads or None, "reference_device": str(device),
                 "xla_flags": os.environ.get("XLA_FLAGS", "")},
      "machine": machine(),
  }, indent=2))


if __name__ == "__main__":
  main()

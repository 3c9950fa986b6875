"""A whole DDIM sampling run: tip_jax (one jit, lax.scan) vs diffusers (PyTorch loop).

    python benchmarks/sample.py --width 0.2 --size 256 --steps 10   # reduced form
    python benchmarks/sample.py --width 1 --size 512 --steps 50     # SD1.5 at 512² (slow on CPU)

Both sides run the same UNet + ControlNet (SD1.5 geometry scaled by --width, random
weights shared through the library's converter, see `forward.py`) for the same DDIM
steps from the same noise, and the final latents are compared. Prints one JSON object: seconds per run and per step for each side, their ratio
(ours / reference; below 1 is faster), compile time, the final latents' max abs
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
                     to_torch)

from tip_jax.diffusion import samplers, schedules
from tip_jax.models import tip


def timed_runs(fn, repeats: int):
  """(median seconds, last output) over `repeats` calls, no warm-up: a whole sampling run
  at SD1.5 size takes minutes, so each side warms up more cheaply (see main)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), out


def reference_denoise(unet, controlnet, x: torch.Tensor, t, text: torch.Tensor,
                      cond: torch.Tensor, rows: int, guidance: float) -> torch.Tensor:
  """diffusers' ControlNet + UNet output for NCHW latents x at timestep t, as its ControlNet
  pipeline computes it: `rows` copies of x (2: classifier-free guidance, the conditional
  row first, text and cond given per row), guided back to x's batch."""
  xs = x.repeat(rows, 1, 1, 1)
  down, mid = controlnet(xs, t, text, cond, return_dict=False)
  out = unet(xs, t, text, down_block_additional_residuals=down,
             mid_block_additional_residual=mid).sample
  return out[1:] + guidance * (out[:1] - out[1:]) if rows == 2 else out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=float, default=0.2, help="channel multiplier vs SD1.5")
  parser.add_argument("--size", type=int, default=256, help="image side in pixels")
  parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
  parser.add_argument("--cfg", action="store_true",
                      help="classifier-free guidance: batch 2 per step on both sides")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--query-chunk", type=int, default=128,
                      help="ModelOptions.attention_query_chunk (0 = off)")
  add_threads_flag(parser)
  args = parser.parse_args()
  limit_threads(args.threads)

  import diffusers  # benchmark-only reference
  cfg, (ref_unet, ref_cn), (unet, controlnet), (unet_params, cn_params) = build_models(
      args.width, args.query_chunk)
  rows = 2 if args.cfg else 1
  z, text, cond = make_inputs(args.size, rows, cfg.cross_attention_dim)
  z, guidance = z[:1], 7.5

  config = schedules.sd_config()
  plan = samplers.make_plan(schedules.Schedule.from_config(config), args.steps, "ddim")

  def denoise(up, cp, x, t):
    out = tip.predict(unet, controlnet, up, cp, jnp.repeat(x, rows, 0), jnp.full((rows,), t),
                      text, text, cond)
    return out[1:] + guidance * (out[:1] - out[1:]) if args.cfg else out

  run = jax.jit(lambda up, cp, x, p: samplers.sample(lambda x, t: denoise(up, cp, x, t), x, p))
  scheduler = diffusers.DDIMScheduler.from_config(config)
  tz, ttext, tcond = to_torch(z), to_torch(text), to_torch(cond)

  def ref_fn(steps):
    scheduler.set_timesteps(steps)
    x = tz
    with torch.no_grad():
      for t in scheduler.timesteps:
        out = reference_denoise(ref_unet, ref_cn, x, t, ttext, tcond, rows, guidance)
        x = scheduler.step(out, t, x).prev_sample
    return x.numpy().transpose(0, 2, 3, 1)

  # Warm-ups: ours is compiled ahead of time (the run program for these shapes), the
  # reference runs one step (first-call allocations and threads).
  start = time.perf_counter()
  compiled = run.lower(unet_params, cn_params, z, plan).compile()
  compile_s = time.perf_counter() - start
  ref_fn(1)
  ours_s, ours_out = timed_runs(
      lambda: np.asarray(compiled(unet_params, cn_params, z, plan)), args.repeats)
  ref_s, ref_out = timed_runs(lambda: ref_fn(args.steps), args.repeats)
  diff = float(np.abs(ours_out - ref_out).max())
  print(json.dumps({
      "benchmark": f"{args.steps}-step DDIM, unet+controlnet, fp32",
      "ours_s": round(ours_s, 3), "reference_s": round(ref_s, 3),
      "ours_per_step_s": round(ours_s / args.steps, 4),
      "reference_per_step_s": round(ref_s / args.steps, 4),
      "ratio_ours_over_reference": round(ours_s / ref_s, 3),
      "ours_compile_s": round(compile_s, 1),
      "final_latent_max_abs_diff": diff, "final_latent_max_abs": float(np.abs(ref_out).max()),
      "config": {"block_out_channels": cfg.block_out_channels, "size": args.size,
                 "steps": args.steps, "cfg_batch": rows, "repeats": args.repeats,
                 "attention_query_chunk": args.query_chunk, "threads": args.threads or None,
                 "xla_flags": os.environ.get("XLA_FLAGS", "")},
      "machine": machine(),
  }, indent=2))


if __name__ == "__main__":
  main()

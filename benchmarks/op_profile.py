"""Where the time of one UNet + ControlNet forward goes, ours beside diffusers', by kind of op.

    python benchmarks/op_profile.py --width 0.2 --size 512 --threads 1

Both sides run the same forward (SD1.5's geometry scaled by --width, the same random
weights, see `forward.py`) `--repeats` times after a warm-up, under their own profilers:
ours under `jax.profiler` (XLA:CPU records one event per executed HLO instruction; each
is mapped to the JAX name stack XLA keeps in its metadata), the reference under
`torch.profiler` (self time of each ATen op, so nested ops are not counted twice).
Each side's time is put in the same kinds:

  convolution     convolutions (ours: `conv_general_dilated`; ATen's convolution kernels)
  attention       the attention core: scores, softmax, weighted sum (ours: the
                  `attn1`/`attn2` scopes outside their projections; ATen:
                  scaled-dot-product attention, bmm/baddbmm, softmax)
  normalisation   GroupNorm and LayerNorm (ours: `norm*` scopes; ATen's norm kernels)
  other matmul    the dense layers, attention's projections included (ours:
                  `dot_general`; ATen: addmm, mm)
  other           elementwise work, copies, layout changes, the rest

Prints one JSON object: per side the milliseconds per forward in each kind, their
shares, their total beside the median unprofiled wall time of a forward (PyTorch's
rest is dispatch; ours can exceed it, XLA:CPU running independent ops side by side and
the profiler adding its own cost), the ratio per kind (ours / reference), the config and
the machine.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import numpy as np
import torch

from tip_jax.models import tip

KINDS = ("convolution", "attention", "normalisation", "other matmul", "other")
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][\w\-]*)\(')
_OP_NAME = re.compile(r'op_name="((?:[^"\\]|\\.)*)"')
# Instructions whose thunks run others (their events enclose the body's own events).
_CONTROL_FLOW = ("while", "call", "conditional")


def our_kind(op_name: str) -> str:
  """The kind of an HLO instruction, from JAX's name stack for it."""
  if re.search(r"/attn[12]\b", op_name) and not re.search(r"/attn[12]/to_", op_name):
    return "attention"
  if "conv_general_dilated" in op_name:
    return "convolution"
  if re.search(r"/(norm\w*|conv_norm_out|GroupNorm\w*|LayerNorm\w*)\b", op_name):
    return "normalisation"
  if "dot_general" in op_name:
    return "other matmul"
  return "other"


def reference_kind(aten_op: str) -> str:
  """The kind of an ATen op (self time only, so every op is its own leaf)."""
  name = aten_op.removeprefix("aten::")
  if "conv" in name:
    return "convolution"
  if "scaled_dot_product" in name or name in ("bmm", "baddbmm", "_softmax", "softmax"):
    return "attention"
  if "norm" in name:
    return "normalisation"
  if name in ("addmm", "mm", "matmul", "linear"):
    return "other matmul"
  return "other"


def op_names(hlo: str) -> dict[str, str | None]:
  """HLO instruction name -> the JAX name stack in its metadata ("" without one); None
  for control flow, whose events enclose their bodies' own (counted once, there).

  Inside a called computation (a loop body, say) XLA:CPU emits some fusions without
  metadata; such an instruction takes the name of the one before it in its computation
  (in a blocked attention's loop body, the score matmuls would otherwise count as
  "other")."""
  names, previous = {}, ""
  for line in hlo.splitlines():
    if line.endswith("{") and not line.startswith(" "):  # a computation's header
      previous = None if line.startswith("ENTRY") else ""
      continue
    match = _INSTRUCTION.match(line)
    if match:
      op_name = _OP_NAME.search(line)
      name = op_name.group(1) if op_name else (previous or "")
      if op_name and previous is not None:
        previous = name
      names[match.group(1)] = None if match.group(2) in _CONTROL_FLOW else name
  return names


def profile_ours(fn, hlo: str, repeats: int) -> dict[str, float]:
  """Microseconds per call of `fn` by kind, from a `jax.profiler` trace of `repeats` calls."""
  names = op_names(hlo)
  with tempfile.TemporaryDirectory() as folder:
    jax.profiler.start_trace(folder)
    for _ in range(repeats):
      jax.block_until_ready(fn())
    jax.profiler.stop_trace()
    path = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  totals = collections.Counter()
  for event in events:
    op = event.get("args", {}).get("hlo_op") if event.get("ph") == "X" else None
    if op is not None and names.get(op, "") is not None:
      totals[our_kind(names.get(op, ""))] += event["dur"] / repeats
  return totals


def profile_reference(fn, repeats: int) -> dict[str, float]:
  """Microseconds per call of `fn` by kind: ATen ops' self CPU time over `repeats` calls."""
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(repeats):
      fn()
  totals = collections.Counter()
  for row in prof.key_averages():
    if row.key.startswith("aten::"):
      totals[reference_kind(row.key)] += row.self_cpu_time_total / repeats
  return totals


def main() -> None:
  # benchmarks/ is on the path when this runs as a script
  from forward import (add_threads_flag, build_models, limit_threads, machine, make_inputs,
                       reference_predict, timed, to_torch)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=float, default=0.2, help="channel multiplier vs SD1.5")
  parser.add_argument("--size", type=int, default=256, help="image side in pixels")
  parser.add_argument("--repeats", type=int, default=5, help="profiled forwards per side")
  parser.add_argument("--query-chunk", type=int, default=128,
                      help="ModelOptions.attention_query_chunk (0 = off)")
  add_threads_flag(parser)
  args = parser.parse_args()
  limit_threads(args.threads)

  cfg, (ref_unet, ref_cn), (unet, controlnet), (unet_params, cn_params) = build_models(
      args.width, args.query_chunk)
  z, text, cond = make_inputs(args.size, 1, cfg.cross_attention_dim)
  t = np.array([500], np.int32)
  forward = jax.jit(lambda up, cp: tip.predict(unet, controlnet, up, cp, z, t, text, text,
                                               cond))
  compiled = forward.lower(unet_params, cn_params).compile()
  ours = lambda: compiled(unet_params, cn_params)  # noqa: E731
  tz, ttext, tcond, tt = to_torch(z), to_torch(text), to_torch(cond), torch.from_numpy(t)

  def reference():
    with torch.no_grad():
      return reference_predict(ref_unet, ref_cn, tz, tt, ttext, tcond)

  # `timed` warms each side up first, so the profiles below run warm.
  wall = {"ours": timed(lambda: jax.block_until_ready(ours()), args.repeats),
          "reference": timed(reference, args.repeats)}
  started = time.perf_counter()
  sides = {"ours": profile_ours(ours, compiled.as_text(), args.repeats),
           "reference": profile_reference(reference, args.repeats)}
  result = {}
  for side, totals in sides.items():
    total = sum(totals.values())
    result[side] = {kind: {"ms": round(totals.get(kind, 0.0) / 1e3, 2),
                           "share": round(totals.get(kind, 0.0) / total, 3)} for kind in KINDS}
    result[side]["total_ms"] = round(total / 1e3, 2)
    result[side]["wall_ms_unprofiled"] = round(wall[side] * 1e3, 2)  # what the kinds cover
  ratios = {kind: round(result["ours"][kind]["ms"] / result["reference"][kind]["ms"], 2)
            if result["reference"][kind]["ms"] else None for kind in KINDS}
  ratios["total"] = round(result["ours"]["total_ms"] / result["reference"]["total_ms"], 2)
  result["ratio_ours_over_reference"] = ratios
  print(json.dumps({
      "benchmark": "UNet + ControlNet forward, time by kind of op, fp32",
      **result, "profiling_s": round(time.perf_counter() - started, 1),
      "config": {"block_out_channels": cfg.block_out_channels, "size": args.size,
                 "repeats": args.repeats, "attention_query_chunk": args.query_chunk,
                 "threads": args.threads or None},
      "machine": machine()}, indent=2))


if __name__ == "__main__":
  main()

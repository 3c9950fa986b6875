"""The attention core alone: tip_jax's blocked attention and JAX's beside PyTorch's SDPA.

    python benchmarks/attention.py --batch 2 --tokens 1024 --heads 8 --dim 8 --threads 1
    python benchmarks/attention.py --batch 2 --tokens 4096 --heads 8 --dim 8 --forward-only

softmax(QK^T/sqrt(D))V for (B, T, N, D) queries, keys and values (self-attention), three
ways: `tip_jax.models.attention.blocked_attention` (query blocks of --chunk),
`jax.nn.dot_product_attention(implementation="xla")` (what the models run without a
query chunk) and `torch.nn.functional.scaled_dot_product_attention` (PyTorch's fused CPU
kernel, what diffusers runs). Timed per side: the forward alone, and forward + backward
(ours: the jitted VJP; PyTorch: `backward()` on a fresh graph). Each side is warmed up,
then the sides alternate call by call over --repeats calls, each on freshly drawn
inputs (the same draw for every side). The defaults are the shape of the first UNet
level's self-attention at SD1.5 width 0.2 and 256² (`train_step.py`'s geometry).
Prints one JSON object: median and interquartile range in ms per side and pass, the
ratios to PyTorch, each side's max abs difference from PyTorch on the first draw, the
config and the machine.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
import torch
from forward import add_threads_flag, limit_threads, machine

from tip_jax.models.attention import blocked_attention


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--tokens", type=int, default=1024)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--dim", type=int, default=8, help="width of a head")
  parser.add_argument("--chunk", type=int, default=128, help="query block of ours")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--forward-only", action="store_true", help="skip the backward pass")
  add_threads_flag(parser)
  args = parser.parse_args()
  limit_threads(args.threads)
  shape = (args.batch, args.tokens, args.heads, args.dim)
  rng = np.random.default_rng(0)

  def jax_side(fn):
    forward = jax.jit(fn)
    backward = jax.jit(lambda q, k, v, g: jax.vjp(fn, q, k, v)[1](g))
    return {"forward": lambda q, k, v, g: jax.block_until_ready(forward(q, k, v)),
            "forward+backward": lambda q, k, v, g: jax.block_until_ready(backward(q, k, v, g))}

  def torch_forward(q, k, v, g):
    with torch.no_grad():
      return torch.nn.functional.scaled_dot_product_attention(*_nhtd(q, k, v))

  def torch_backward(q, k, v, g):
    q, k, v = (x.requires_grad_() for x in _nhtd(q, k, v))
    torch.nn.functional.scaled_dot_product_attention(q, k, v).backward(*_nhtd(g))
    return q.grad, k.grad, v.grad

  sides = {"ours_blocked": jax_side(lambda q, k, v: blocked_attention(q, k, v, args.chunk)),
           "jax_xla": jax_side(lambda q, k, v: jax.nn.dot_product_attention(
               q, k, v, implementation="xla")),
           "pytorch_sdpa": {"forward": torch_forward, "forward+backward": torch_backward}}
  passes = ("forward",) if args.forward_only else ("forward", "forward+backward")
  draw = lambda: [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]  # noqa: E731

  first = draw()
  reference = torch_forward(*first).permute(0, 2, 1, 3).numpy()
  errors = {name: float(np.abs(np.asarray(side["forward"](*first)) - reference).max())
            for name, side in sides.items() if name != "pytorch_sdpa"}
  for side in sides.values():  # warm-up: compiles, first-call allocations
    for name in passes:
      side[name](*first)
  times = {name: {p: [] for p in passes} for name in sides}
  for _ in range(args.repeats):
    inputs = draw()
    for p in passes:
      for name, side in sides.items():
        start = time.perf_counter()
        side[p](*inputs)
        times[name][p].append(time.perf_counter() - start)
  stats = {name: {p: {"median_ms": round(float(np.median(t)) * 1e3, 2),
                      "iqr_ms": [round(float(np.percentile(t, q)) * 1e3, 2) for q in (25, 75)]}
                  for p, t in by_pass.items()} for name, by_pass in times.items()}
  ratios = {name: {p: round(stats[name][p]["median_ms"] / stats["pytorch_sdpa"][p]["median_ms"],
                            3) for p in passes} for name in ("ours_blocked", "jax_xla")}
  print(json.dumps({
      "benchmark": "attention core, float32, ms per call", **stats,
      "ratio_over_pytorch": ratios, "max_abs_diff_vs_pytorch": errors,
      "config": {**vars(args), "threads": args.threads or None},
      "machine": machine()}, indent=2))


def _nhtd(*arrays: np.ndarray) -> list[torch.Tensor]:
  """(B, T, N, D) arrays as PyTorch's (B, N, T, D) tensors."""
  return [torch.from_numpy(x).permute(0, 2, 1, 3) for x in arrays]


if __name__ == "__main__":
  main()

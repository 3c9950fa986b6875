"""Evaluation throughput per checkpoint: restore + score, batched vs one image at a time.

    python benchmarks/evaluate.py                      # tiny config, 8 images of 64², 10 steps
    python benchmarks/evaluate.py --batch 8 --steps 20 --metrics psnr,ssim,lpips

What the evaluator does for each (set, prompt mode) of a checkpoint: restore a batch of
degraded images with their prompts (`TIPRestorer.restore_batch`) and score it against
the ground truth (`eval.scoring.Tally`: PSNR, SSIM, LPIPS by default). A random tiny TIP
(the `tiny` config's backbone, ControlNet copied from its UNet); fresh random images and
seeds every round, the two ways alternating so both see the same machine load. Both are
warmed up first, then timed for at least --seconds and --rounds each. Prints one JSON
object: median and spread of seconds per round, images/s of each way, their ratio,
the config and the machine.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from forward import machine
from restore_batch import PROMPTS, summary, time_alternating, tiny_random_restorer

from tip_jax.eval import scoring


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--metrics", default="psnr,ssim,lpips")
  parser.add_argument("--seconds", type=float, default=15.0)
  parser.add_argument("--rounds", type=int, default=20)
  args = parser.parse_args()

  restorer = tiny_random_restorer()
  scorer = scoring.Scorer.load(args.metrics)
  rng = np.random.default_rng(0)
  prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
  semantic, restoration = [p[0] for p in prompts], [p[1] for p in prompts]

  def evaluate(inputs, gt, per_call: int):
    tally = scoring.Tally(scorer)
    seeds = rng.integers(0, 2**31, len(inputs)).tolist()
    for i in range(0, len(inputs), per_call):
      part = slice(i, i + per_call)
      out = restorer.restore_batch(inputs[part], semantic[part], restoration[part],
                                   steps=args.steps, seed=seeds[part], upsample=False)
      tally.add(out, gt[part], ref_features=False)
    return tally.result()

  def draw():
    shape = (args.batch, args.size, args.size, 3)
    return rng.integers(0, 256, shape, np.uint8), rng.integers(0, 256, shape, np.uint8)

  ways = {"batched": lambda pair: evaluate(*pair, args.batch),
          "one_at_a_time": lambda pair: evaluate(*pair, 1)}
  times = time_alternating(ways, draw, args.seconds, args.rounds)
  result = {name: summary(t, args.batch) for name, t in times.items()}
  print(json.dumps({
      "benchmark": "evaluate", **result,
      "speedup": result["batched"]["images_per_s"] / result["one_at_a_time"]["images_per_s"],
      "config": {"model": "tiny (random)", **vars(args)}, "machine": machine()}))


if __name__ == "__main__":
  main()

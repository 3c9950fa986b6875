"""`TIPRestorer.restore_batch` of N same-size images in one program vs N `restore` calls.

    python benchmarks/restore_batch.py                       # tiny config, 4 images of 64², 10 steps
    python benchmarks/restore_batch.py --images 8 --size 128 --steps 20

A random tiny TIP (the `tiny` config's backbone, ControlNet copied from its UNet) restores
fresh random images with their own prompts every round, alternating the two ways so both
see the same machine load. Both are warmed up (compiled) first, then timed for at least
--seconds and --rounds each. Prints one JSON object: median and spread of seconds per
round, images/s of each way and their ratio, the config and the machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from forward import machine

from tip_jax.experiment import components
from tip_jax.experiment.config import load_config
from tip_jax.restore import TIPRestorer

PROMPTS = [("a zebra", "Deblur with sigma 2.0;"), ("", "Remove all degradation"),
           ("a red motorcycle", "Denoise with sigma 0.05;"), ("a cat", "Dejpeg with quality 40;")]


def summary(times: list[float], images: int) -> dict:
  t = np.asarray(times)
  return {"median_s": float(np.median(t)), "p10_s": float(np.percentile(t, 10)),
          "p90_s": float(np.percentile(t, 90)), "rounds": len(t),
          "images_per_s": images / float(np.median(t))}


def tiny_random_restorer() -> TIPRestorer:
  """A random backbone of the `tiny` geometry with the paper's E' (what the published
  figures used) and its ControlNet copied from the UNet."""
  config = load_config("configs/tip.py:tiny", {"model.backbone": "random",
                                               "model.geometry": "tiny",
                                               "model.conditioning_widths": ()})
  comps = components.build(config)
  return TIPRestorer(comps.backbone, comps.controlnet,
                     components.init_controlnet(comps, config.seed),
                     resolution=config.data.resolution)


def time_alternating(ways: dict, draw, seconds: float, rounds: int) -> dict[str, list[float]]:
  """Warms up every way, then times them in turn on fresh `draw()`s until each has run
  for `seconds` in all and at least `rounds` times: {way: [seconds per round]}."""
  for run in ways.values():  # warm-up: compiles every program each way uses
    run(draw())
  times = {name: [] for name in ways}
  start = time.perf_counter()
  while (time.perf_counter() - start < len(ways) * seconds
         or min(len(t) for t in times.values()) < rounds):
    for name, run in ways.items():
      inputs = draw()
      t0 = time.perf_counter()
      run(inputs)
      times[name].append(time.perf_counter() - t0)
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=4)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--seconds", type=float, default=15.0)
  parser.add_argument("--rounds", type=int, default=20)
  args = parser.parse_args()

  restorer = tiny_random_restorer()
  rng = np.random.default_rng(0)
  prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
  semantic, restoration = [p[0] for p in prompts], [p[1] for p in prompts]

  def batched(images):
    restorer.restore_batch(images, semantic, restoration, steps=args.steps, seed=0)

  def singles(images):
    for i, image in enumerate(images):
      restorer.restore(image, semantic[i], restoration[i], steps=args.steps, seed=i)

  def draw():
    return [rng.integers(0, 256, (args.size, args.size, 3), np.uint8)
            for _ in range(args.images)]

  times = time_alternating({"batch": batched, "singles": singles}, draw, args.seconds,
                           args.rounds)
  result = {name: summary(t, args.images) for name, t in times.items()}
  print(json.dumps({
      "benchmark": "restore_batch", **result,
      "speedup": result["batch"]["images_per_s"] / result["singles"]["images_per_s"],
      "config": {"model": "tiny (random)", **vars(args)}, "machine": machine()}))


if __name__ == "__main__":
  main()

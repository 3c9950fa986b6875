"""A config's training step alone, as its trainer compiles it: what one step costs, in
steady state, without the data pipeline, checkpoints or sample grids around it.

    python benchmarks/config_step.py                                   # configs/tip.py:tiny
    python benchmarks/config_step.py --set model.attention_query_chunk=0

The step is `tip_jax.train.step.make_train_step` on the config's own experiment
(`tip_jax.experiment.setup` on a 1-device mesh: its backbone, shardings, optimizer),
compiled ahead of time with the state donated, as `tip-train` does. It is fed a pool of
`--batches` batches shaped like the pipeline's (random uint8 crops, a caption's and the
restoration prompts' token ids, degradation parameters drawn by `sample_params` with a
new seed per batch: both degradation kinds, every branch of the pipeline), cycled so that
consecutive steps never see the same draw. After three warm-up steps it times steps
until `--seconds` have passed and at least `--min-steps` ran, and prints one JSON object:
the median step time and its interquartile range, images/s, the compile time, the
overrides, the machine. Where the trainer's logged steps/s is lower, the rest is the
trainer's own work (data workers, host batches) on the same cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import jax
import numpy as np

from tip_jax.degrade import params_to_tree, sample_params
from tip_jax.experiment import setup as setup_lib
from tip_jax.experiment.config import load_config
from tip_jax.models.tokenizer import tokenize
from tip_jax.train import step as step_lib


def parse_override(text: str) -> tuple[str, object]:
  """KEY=VALUE, VALUE read as JSON where it parses (numbers, booleans) and a string else."""
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value


def host_batch(exp: setup_lib.Experiment, seed: int, rng: np.random.Generator
               ) -> tuple[dict, list[str]]:
  """(a host batch shaped like the pipeline's, its restoration prompts): random uint8
  crops, a caption's and the prompts' token ids, degradation parameters drawn with
  `seed`."""
  size, n = exp.config.data.resolution, exp.per_host_batch
  tokenizer = exp.components.backbone.tokenizer
  params, prompts = sample_params(seed, n, exp.degrade_config)
  return {"image": rng.integers(0, 256, (n, size, size, 3), np.uint8),
          "semantic_ids": tokenize(tokenizer, ["a photo of a red fox in the snow"] * n),
          "restoration_ids": tokenize(tokenizer, prompts),
          # params_to_tree drops a leading batch-of-one axis: add one to keep the batch axis.
          "degrade": params_to_tree(jax.tree.map(lambda x: np.asarray(x)[None], params)),
          "index": np.arange(n, dtype=np.int32)}, prompts


def batches(exp: setup_lib.Experiment, count: int) -> list:
  """`count` device batches of the config's shape, each with its own draw."""
  rng = np.random.default_rng(0)
  return [exp.global_batch(host_batch(exp, seed, rng)[0]) for seed in range(count)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/tip.py:tiny", help="config spec")
  parser.add_argument("--set", type=parse_override, action="append", default=[],
                      metavar="KEY=VALUE", help="a config override (repeatable)")
  parser.add_argument("--batches", type=int, default=20, help="distinct batches cycled")
  parser.add_argument("--seconds", type=float, default=15.0, help="least timed seconds")
  parser.add_argument("--min-steps", type=int, default=20, help="least timed steps")
  args = parser.parse_args()

  overrides = dict(args.set)
  config = load_config(args.config, {"mesh": {"data": 1, "fsdp": 1, "tensor": 1},
                                     **overrides})
  exp = setup_lib.setup(config, workdir="", devices=jax.devices()[:1])
  state = exp.init_state()
  pool = batches(exp, args.batches)
  step_fn = step_lib.make_train_step(exp.task, config, exp.tx)
  start, cpu_start = time.perf_counter(), time.process_time()
  compiled = jax.jit(step_fn, out_shardings=(exp.state_shardings, None),
                     donate_argnums=(0,)).lower(state, exp.frozen, pool[0]).compile()
  # CPU seconds per wall second of the compile: what a core left idle can do beside it.
  compile_s, compile_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start

  times: list[float] = []
  for i in itertools.count():
    start = time.perf_counter()
    state, metrics = compiled(state, exp.frozen, pool[i % len(pool)])
    jax.block_until_ready(metrics)
    if i >= 3:
      times.append(time.perf_counter() - start)
      if sum(times) >= args.seconds and len(times) >= args.min_steps:
        break
  median = float(np.median(times))
  # Imported after the timing: it loads PyTorch and diffusers, which the step does not use.
  from forward import machine
  print(json.dumps({
      "benchmark": "one training step of a config, steady state",
      "step_ms": {"median": round(median * 1e3, 1),
                  "iqr": [round(float(np.percentile(times, q)) * 1e3, 1) for q in (25, 75)],
                  "steps": len(times)},
      "images_per_s": round(config.batch_size / median, 2),
      "compile_s": round(compile_s, 1),
      "compile_cpu_s": round(compile_cpu_s, 1),
      "final_loss": float(metrics["loss"]),
      "config": {"spec": args.config, "overrides": overrides,
                 "batch_size": config.batch_size, "resolution": config.data.resolution,
                 "distinct_batches": len(pool)},
      "machine": machine()}, indent=2))


if __name__ == "__main__":
  main()

"""The paper's ablations in miniature (Tab. 4/5) and its strength walk, on the held-out photos.

    python benchmarks/miniature.py --workdir /tmp/miniature                # 3 seeds
    python benchmarks/miniature.py --workdir /tmp/miniature --seeds 0 --steps 300

Trains `configs/tip.py:tiny` (the shipped prior, the bundled training photos) once per
(variant, seed) in `WORKDIR/<variant>_seed<k>` (a finished run is reused, an unfinished
one resumes), scores each on the embedded held-out sets with the evaluator, and prints
one JSON object; `WORKDIR/miniature.md` gets the tables. The rows, all on the same
degraded inputs and sampling seeds:

  (a) the degraded input              (d) TIP, full prompts (the paper's model)
  (b) TIP, blind prompt               (e) ControlNet-SR: additive fusion, no prompts
  (c) TIP trained and scored with     (f) additive fusion with both prompts
      type-only prompts (no_params)

(b) and (d) are one model scored two ways. Each metric is the mean over images, then
mean ± standard deviation over the seeds.

The strength walk: held-out crops with Gaussian noise of a fixed sigma (only that
stage), restored by the seed-0 TIP model with "Denoise with sigma s" for s across the
training range; the output's high-frequency energy (mean squared Laplacian of the grey
image, x 1e3) and PSNR against the clean crop for each s. The paper (Fig. 6) says a
larger s removes more: the energy should fall as s grows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import ml_collections
from absl import flags
import numpy as np
from forward import machine

from tip_jax.degrade import parameterized, prompts
from tip_jax.eval import evaluator, ground_truth, scoring
from tip_jax.experiment.config import load_config
from tip_jax.restore import TIPRestorer
from tip_jax.train import trainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tip.py"

# name -> (config argument, overrides, {row: evaluator mode (semantic, restoration)})
VARIANTS = {
    "tip": ("tiny", {}, {"b_tip_blind": ("", "blind"), "d_tip_full": ("caption", "values")}),
    "no_params": ("tiny,no_params", {}, {"c_tip_type_only": ("caption", "type_only")}),
    "controlnet_sr": ("tiny,controlnet_sr", {}, {"e_controlnet_sr": ("", "")}),
    "additive": ("tiny", {"model.fusion": "additive"},
                 {"f_additive_prompts": ("caption", "values")}),
}
METRICS = ("psnr", "ssim", "lpips")


def variant_config(name: str, seed: int, args: argparse.Namespace):
  arg, overrides, modes = VARIANTS[name]
  config = load_config(f"{CONFIG}:{arg}", {**overrides, "seed": seed,
                                           "evals.after_training": False,
                                           "evals.metrics": ",".join(METRICS),
                                           "evals.embedded_count": args.count,
                                           "evals.steps": args.sampler_steps})
  if args.steps:
    config.total_steps = args.steps
  config.evals.modes = ml_collections.ConfigDict(modes)
  config.sample_every_steps = 0
  return config


def train_and_score(name: str, seed: int, args: argparse.Namespace) -> dict:
  """{row or "a_input": {set: {metric: mean}}} of one trained variant, and its times."""
  workdir = os.path.join(args.workdir, f"{name}_seed{seed}")
  config = variant_config(name, seed, args)
  start = time.perf_counter()
  state = trainer.train(config, workdir)
  trained = time.perf_counter() - start
  scorer = evaluator.Evaluator(config, workdir)
  step = int(state.step)
  if step not in scorer.state.complete:
    scorer.evaluate(step)
  results = scorer.state.results[str(step)]
  rows: dict[str, dict] = {"a_input": {}}
  for eval_set in scorer.sets:
    rows["a_input"][eval_set.name] = scorer.state.inputs[eval_set.name]
    for row in VARIANTS[name][2]:
      rows.setdefault(row, {})[eval_set.name] = results[f"{eval_set.name}/{row}"]
  means = {row: {s: {m: r[m]["mean"] for m in METRICS} for s, r in sets.items()}
           for row, sets in rows.items()}
  print(f"{name} seed {seed}: step {step}, trained in {trained:.0f} s", file=sys.stderr)
  return {"rows": means, "train_s": trained, "step": step, "workdir": workdir}


def aggregate(runs: list[dict]) -> dict:
  """{row: {set: {metric: (mean, std over seeds, seeds)}}}; the input row is the same
  for every run (same crops), so it is taken once per seed like the others."""
  table: dict = {}
  for run in runs:
    for row, sets in run["rows"].items():
      for set_name, metrics in sets.items():
        for metric, value in metrics.items():
          table.setdefault(row, {}).setdefault(set_name, {}).setdefault(metric, []).append(value)
  return {row: {s: {m: (float(np.mean(v)), float(np.std(v)), len(v)) for m, v in ms.items()}
                for s, ms in sets.items()} for row, sets in sorted(table.items())}


def laplacian_energy(images: np.ndarray) -> float:
  """Mean squared 4-neighbour Laplacian of the grey [0, 1] images, x 1e3: what noise and
  texture add and smoothing takes away."""
  grey = images.astype(np.float64).mean(-1) / 255
  lap = (4 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1]
         - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:])
  return float(1e3 * np.mean(lap ** 2))


def strength_walk(workdir: str, args: argparse.Namespace) -> dict:
  """High-frequency energy and PSNR of the restored crops vs the prompt's noise sigma."""
  config = load_config(f"{CONFIG}:tiny")
  size = int(config.data.resolution)
  clean = np.stack([c.image for c in ground_truth.Embedded(size, seed=1).examples(args.count)])
  tip_config = parameterized.TIPConfig()
  stages = [prompts.Stages(noise_sigma=args.walk_sigma)] * len(clean)
  params = parameterized.to_arrays(stages)
  keys = jax.random.split(jax.random.key(7), len(clean))
  degrade = jax.jit(jax.vmap(lambda x, p, k: parameterized.apply(x, p, k, tip_config)))
  noisy = np.asarray(degrade(clean.astype(np.float32) / 255, params, keys))
  noisy = np.round(noisy * 255).astype(np.uint8)
  restorer = TIPRestorer.from_checkpoint(workdir)
  psnr = scoring.Scorer.load("psnr")
  lo, hi = tip_config.noise_sigma
  walk = []
  for s in np.linspace(lo, hi, args.walk_points):
    text = prompts.Stages(noise_sigma=prompts.quantize("noise_sigma", s)).prompt()
    out = restorer.restore_batch(noisy, "", text, steps=args.sampler_steps, seed=0,
                                 upsample=False)
    tally = scoring.Tally(psnr)
    tally.add(out, clean, [""] * len(clean), ref_features=False)
    walk.append({"prompt": text, "energy": laplacian_energy(out),
                 "psnr": tally.result(None)["psnr"]["mean"]})
  energies = [w["energy"] for w in walk]
  return {"noise_sigma": args.walk_sigma, "crops": len(clean),
          "clean_energy": laplacian_energy(clean), "input_energy": laplacian_energy(noisy),
          "points": walk,
          "energy_falls_monotonically": bool(np.all(np.diff(energies) < 0))}


def markdown(table: dict, walk: dict | None, seeds: list[int], steps: int) -> str:
  lines = [f"# Miniature ablation ({len(seeds)} seeds: {seeds}; {steps} steps each)", ""]
  sets = sorted({s for row in table.values() for s in row})
  for set_name in sets:
    lines += [f"## {set_name}", "", "| row | " + " | ".join(METRICS) + " |",
              "|---|" + "---:|" * len(METRICS)]
    for row, by_set in table.items():
      if set_name in by_set:
        cells = [f"{m:.4f} ± {s:.4f}" if metric != "psnr" else f"{m:.2f} ± {s:.2f}"
                 for metric, (m, s, _) in by_set[set_name].items()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
  if walk:
    lines += [f"## Strength walk (noise sigma {walk['noise_sigma']} in the input, "
              f"{walk['crops']} crops)", "",
              f"clean: energy {walk['clean_energy']:.3f}; degraded input: "
              f"{walk['input_energy']:.3f}", "", "| prompt | energy x1e3 | psnr |",
              "|---|---:|---:|"]
    lines += [f"| {p['prompt']} | {p['energy']:.3f} | {p['psnr']:.2f} |"
              for p in walk["points"]]
    lines.append("")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=0, help="training steps (0: the config's)")
  parser.add_argument("--count", type=int, default=48, help="held-out crops per set")
  parser.add_argument("--sampler_steps", type=int, default=20)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--walk_sigma", type=float, default=0.08)
  parser.add_argument("--walk_points", type=int, default=6)
  parser.add_argument("--no_walk", action="store_true")
  args = parser.parse_args()
  flags.FLAGS(sys.argv[:1])  # Grain's workers read absl flags: their defaults, parsed
  seeds = [int(s) for s in args.seeds.split(",")]
  runs = [train_and_score(name, seed, args) for seed in seeds
          for name in args.variants.split(",")]
  table = aggregate(runs)
  walk = None if args.no_walk else strength_walk(runs[0]["workdir"], args)
  steps = runs[0]["step"]
  text = markdown(table, walk, seeds, steps)
  with open(os.path.join(args.workdir, "miniature.md"), "w", encoding="utf-8") as f:
    f.write(text)
  print(json.dumps({"table": table, "walk": walk, "seeds": seeds, "steps": steps,
                    "train_s": {os.path.basename(r["workdir"]): round(r["train_s"], 1)
                                for r in runs},
                    "config": vars(args), "machine": machine()}, indent=1))


if __name__ == "__main__":
  main()

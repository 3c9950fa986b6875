"""The degradation estimator measured on held-out photos, and what its prompts are worth to TIP.

    python benchmarks/estimator.py                          # the shipped estimator, 512 draws
    python benchmarks/estimator.py --estimator DIR --count 512 --seed 0
    python benchmarks/estimator.py --tip /tmp/tip --count 0 --tip_count 16

Estimator tables (`--count` draws, fixed `--seed`): 64² crops of the held-out photos
(`demo:heldout`, never trained on), degraded on the CPU exactly as in training (half
Real-ESRGAN, half the parameterised pipeline, parameters from (seed, index)), rounded to
8 bits as a stored file would be. For the blind prompt (Real-ESRGAN mix) and each stage
of the parameterised pipeline: presence accuracy, precision, recall and F1, and the mean
absolute error of the strength (prompt units, on the prompt grid) over the draws that
applied the stage, beside the error of always guessing the range's middle. Noise sigma is
also estimated by scikit-image's wavelet estimator (`estimate_sigma`, [0, 1] units, the
prompt's) on the same images: over draws with noise only (its own setting: additive
white Gaussian noise), over every draw with noise (downsampling smooths the noise before
the image is brought back up, and JPEG removes some; the prompt states the sigma added),
and over every parameterised draw (true sigma 0 when no noise was added; ours says 0
when it finds none).

With `--tip WORKDIR`: a trained TIP restores the embedded held-out test set A
(`tip-make-benchmark --kind embedded`, the model's resolution, `--tip_count` images) and
set B with the blind prompt, the estimated prompt ("auto") and the true prompt; PSNR,
SSIM and LPIPS of each (and of the degraded input), and how often "auto" equals "true".

Prints one JSON object, then the same tables in Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np
from skimage.restoration import estimate_sigma

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tip_jax.data import pipeline as data_lib  # noqa: E402
from tip_jax.data.config import DataConfig  # noqa: E402
from tip_jax.degrade import BLIND_PROMPT, DegradeConfig, degrade, params_from_tree  # noqa: E402
from tip_jax.degrade.pipeline import REALESRGAN  # noqa: E402
from tip_jax.degrade.parameterized import STAGES as STAGE_FLAGS, TIPConfig  # noqa: E402
from tip_jax.estimate import Estimator, load  # noqa: E402
from tip_jax.estimate.heads import STAGES  # noqa: E402
from tip_jax.models.tokenizer import bundled_tokenizer  # noqa: E402

_BATCH = 16


def heldout_draws(count: int, seed: int, size: int = 64) -> dict[str, np.ndarray]:
  """`count` degraded held-out crops and their truth: images uint8 (N, size, size, 3),
  blind (N,) bool, and per stage `<stage>` values with `<stage>_on` flags."""
  config = DegradeConfig(size=(size, size))
  data = DataConfig(source="demo:heldout", resolution=size, max_zoom=4.0, num_workers=0,
                    semantic_dropout=0.0)
  batches = data_lib.make_iterator(data, batch_size=_BATCH, seed=seed, degrade_config=config,
                                   tokenizer=bundled_tokenizer(), process_index=0,
                                   process_count=1)
  run = jax.jit(degrade)
  parts: dict[str, list] = {"images": [], "blind": []}
  while sum(len(x) for x in parts["images"]) < count:
    batch = next(batches)
    params = params_from_tree(batch["degrade"], config)
    out = np.asarray(run(batch["image"].astype(np.float32) / 255, params))
    parts["images"].append(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8))
    parts["blind"].append(np.asarray(params.pipeline) == REALESRGAN)
    for field in STAGES:
      parts.setdefault(field, []).append(np.asarray(getattr(params.tip, field)))
      flag = STAGE_FLAGS[field][0]
      parts.setdefault(f"{field}_on", []).append(np.asarray(getattr(params.tip, flag)))
  batches.close()
  return {k: np.concatenate(v)[:count] for k, v in parts.items()}


def _mean(x: np.ndarray) -> float | None:
  """The mean, or None (JSON null) over no draws."""
  return float(np.mean(x)) if x.size else None


def _presence(truth: np.ndarray, guess: np.ndarray) -> dict:
  tp, fp = int(np.sum(truth & guess)), int(np.sum(~truth & guess))
  fn = int(np.sum(truth & ~guess))
  precision = tp / max(tp + fp, 1)
  recall = tp / max(tp + fn, 1)
  return {"count": int(truth.size), "positives": int(truth.sum()),
          "accuracy": float(np.mean(truth == guess)), "precision": precision,
          "recall": recall, "f1": 2 * precision * recall / max(precision + recall, 1e-12)}


def estimator_tables(estimator: Estimator, draws: dict[str, np.ndarray]) -> dict:
  """The tables of the module docstring for `draws` (from `heldout_draws`)."""
  estimates = [estimator.estimate(image) for image in draws["images"]]
  blind = np.array([e.blind for e in estimates])
  tables = {"draws": len(estimates), "blind": _presence(draws["blind"], blind)}
  tip = ~draws["blind"]
  middle = TIPConfig().defaults
  for field in STAGES:
    on = draws[f"{field}_on"][tip]
    guess = np.array([e.stages[field].present for e in estimates])[tip]
    value = np.array([e.stages[field].value for e in estimates])[tip]
    truth = draws[field][tip]
    tables[field] = {**_presence(on, guess),
                     "strength_mae": _mean(np.abs(value - truth)[on]),
                     "strength_mae_when_found": _mean(np.abs(value - truth)[on & guess]),
                     "middle_of_range_mae": _mean(np.abs(middle[field] - truth)[on])}
  both = [tuple(f for f in STAGES if e.stages[f].present) for e in estimates]
  named = [tuple(f for f in STAGES if draws[f"{f}_on"][i]) for i in range(len(estimates))]
  tables["stages_all_right"] = float(np.mean([both[i] == named[i]
                                              for i in np.flatnonzero(tip)]))
  tables["noise"] = noise_table(estimates, draws)
  return tables


def noise_table(estimates: list, draws: dict[str, np.ndarray]) -> dict:
  """Noise sigma MAE, ours vs scikit-image's `estimate_sigma`, on subsets of the
  parameterised draws (see the module docstring)."""
  tip = ~draws["blind"]
  truth = np.where(draws["noise_sigma_on"], draws["noise_sigma"], 0.0)
  ours = np.array([e.stages["noise_sigma"].value if e.stages["noise_sigma"].present else 0.0
                   for e in estimates])
  wavelet = np.array([estimate_sigma(image.astype(np.float64) / 255, channel_axis=-1,
                                     average_sigmas=True) for image in draws["images"]])
  alone = draws["noise_sigma_on"] & ~draws["blur_sigma_on"] & ~draws["downsample_on"] & \
      ~draws["jpeg_quality_on"]
  subsets = {"noise_only": tip & alone, "with_noise": tip & draws["noise_sigma_on"],
             "all_parameterised": tip}
  return {name: {"count": int(m.sum()), "ours_mae": _mean(np.abs(ours - truth)[m]),
                 "estimate_sigma_mae": _mean(np.abs(wavelet - truth)[m])}
          for name, m in subsets.items()}


def compare_prompts(workdir: str, estimator: Estimator, count: int, seed: int,
                    steps: int | None = None, batch_size: int = 8) -> dict:
  """A TIP run restoring the embedded held-out sets with the blind, estimated ("auto")
  and true prompts: {set: {mode: {metric: mean}}} plus the share of auto == true."""
  from tip_jax.eval import scoring, sets
  from tip_jax.experiment.runs import run_config
  from tip_jax.restore import AUTO, TIPRestorer
  restorer = TIPRestorer.from_checkpoint(workdir)
  restorer.estimator = estimator
  evals = run_config(workdir)[0].evals
  steps = steps or int(evals.steps)
  scorer = scoring.Scorer.load("psnr,ssim,lpips")
  out = {"steps": steps, "guidance": float(evals.guidance)}
  with tempfile.TemporaryDirectory() as folder:
    for eval_set in sets.ensure_embedded(folder, size=restorer.resolution, count=count,
                                         seed=seed):
      tallies = {m: scoring.Tally(scorer) for m in ("input", "blind", "auto", "true")}
      same = []
      for batch in eval_set.batches(batch_size):
        n = len(batch.ids)
        same += [restorer.auto_prompt(image) == t
                 for image, t in zip(batch.inputs, batch.restoration)]
        tallies["input"].add(batch.inputs, batch.gt, ref_features=False)
        modes = {"blind": [BLIND_PROMPT] * n, "auto": [AUTO] * n, "true": batch.restoration}
        for mode, texts in modes.items():
          restored = restorer.restore_batch(batch.inputs, "", texts, steps=steps,
                                            guidance=out["guidance"], seed=seed,
                                            upsample=False)
          tallies[mode].add(restored, batch.gt, ref_features=False)
      out[eval_set.name] = {**{m: {k: v["mean"] for k, v in t.result().items()}
                               for m, t in tallies.items()},
                            "auto_equals_true": float(np.mean(same)), "images": len(same)}
  return out


def _cell(value: float | None, digits: int) -> str:
  return "" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
  lines = []
  if "estimator" in result:
    t = result["estimator"]
    lines += [f"Held-out draws: {t['draws']} (demo:heldout, seed {result['seed']})", "",
              "| prompt part | count | positives | accuracy | precision | recall | F1 | "
              "strength MAE | MAE when found | middle-of-range MAE |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("blind", *STAGES):
      r = t[name]
      mae = [_cell(r.get(k), 3) for k in
             ("strength_mae", "strength_mae_when_found", "middle_of_range_mae")]
      lines.append(f"| {name} | {r['count']} | {r['positives']} | {r['accuracy']:.3f} | "
                   f"{r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                   + " | ".join(mae) + " |")
    lines += ["", f"Parameterised draws with every stage right: {t['stages_all_right']:.3f}",
              "", "| noise sigma MAE | count | ours | skimage estimate_sigma |",
              "|---|---:|---:|---:|"]
    for name, r in t["noise"].items():
      lines.append(f"| {name} | {r['count']} | {_cell(r['ours_mae'], 4)} | "
                   f"{_cell(r['estimate_sigma_mae'], 4)} |")
  if "tip" in result:
    lines += ["", "| set | prompt | PSNR | SSIM | LPIPS |", "|---|---|---:|---:|---:|"]
    for name, rows in result["tip"].items():
      if not isinstance(rows, dict):
        continue
      for mode, r in rows.items():
        if isinstance(r, dict):
          lines.append(f"| {name} | {mode} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                       f"{r['lpips']:.4f} |")
      lines.append(f"| {name} | auto == true | {rows['auto_equals_true']:.3f} | | |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--estimator", default=None, help="estimator folder (default: shipped)")
  parser.add_argument("--count", type=int, default=512, help="held-out draws (0: skip)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tip", default=None, help="a TIP workdir to restore with")
  parser.add_argument("--tip_count", type=int, default=16)
  parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the "
                      "run's evals.steps)")
  args = parser.parse_args()
  estimator = load(args.estimator)
  result = {"estimator_path": estimator.source, "seed": args.seed,
            "backend": jax.default_backend()}
  start = time.perf_counter()
  if args.count:
    result["estimator"] = estimator_tables(estimator, heldout_draws(args.count, args.seed))
  if args.tip:
    result["tip"] = compare_prompts(args.tip, estimator, args.tip_count, args.seed, args.steps)
  result["seconds"] = time.perf_counter() - start
  print(json.dumps(result))
  print(markdown(result))


if __name__ == "__main__":
  main()

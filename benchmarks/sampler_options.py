"""A trained TIP scored on the held-out sets under the restorer's inference options.

    python benchmarks/sampler_options.py --workdir /tmp/tip_tiny
    python benchmarks/sampler_options.py --workdir /tmp/tip_tiny \
        --variants '[{"guidance": 4.0}, {"color_fix": "wavelet", "strength": 0.3}]'
    python benchmarks/sampler_options.py --workdir /tmp/tip_tiny \
        --variants '[{"steps": 1, "timestep_spacing": "leading"}, {"steps": 1}]'

The evaluator scores the paper's sampler (DDIM from pure noise, `evals.guidance`);
`TIPRestorer.restore_batch` also offers classifier-free guidance weights, StableSR's
colour fix towards the input's low frequencies (`color_fix`), a start from the
input's noised latent (`strength` < 1, SDEdit's) and a scaled ControlNet
(`control_scale`). Each variant (a dict of those keyword arguments, plus `mode`:
"full" = caption + c_r with values, or "blind"; `steps`; `timestep_spacing`, the DDIM
layout the run's `model.timestep_spacing` sets) restores the embedded held-out sets A
and B at the run's resolution (built in a temporary folder, as the trainer builds
them: same crops, same degraded inputs) with the same seeds, and is scored by PSNR,
SSIM and LPIPS beside the degraded input. Prints one JSON object.

`--split train+extra` builds the same kind of sets from the photos the tiny config
trains on instead: a validation split on which to choose inference options (e.g.
`color_fix_levels`) before scoring them on the held-out photos.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

import numpy as np

from tip_jax.eval import scoring, sets
from tip_jax.eval.modes import Mode
from tip_jax.eval.sets import EvalSet
from tip_jax.restore import TIPRestorer

DEFAULT_VARIANTS = (
    {"guidance": 4.0}, {"guidance": 1.0}, {"guidance": 1.0, "mode": "blind"},
    {"guidance": 1.0, "color_fix": "wavelet"},
    {"guidance": 1.0, "strength": 0.3}, {"guidance": 1.0, "strength": 0.3, "color_fix": "wavelet"},
)
# Variant keys that are not `restore_batch` options: the prompt mode, the step count
# (else --steps) and the DDIM timestep layout (else the run's `model.timestep_spacing`).
_NOT_RESTORE_OPTIONS = ("mode", "steps", "timestep_spacing")
# The tiny config's two scored prompt modes, as the evaluator reads them.
MODES = {"full": Mode("full", "caption", "values"), "blind": Mode("blind", "", "blind")}


def _score(scorer: scoring.Scorer, images, gt) -> dict[str, float]:
  tally = scoring.Tally(scorer)
  tally.add(images, gt, ref_features=False)
  return {name: round(v["mean"], 4) for name, v in tally.result().items()}


def measure(workdir: str, variants=DEFAULT_VARIANTS, count: int = 48, steps: int = 20,
            batch: int = 8, seed: int = 0, split: str = "heldout") -> dict:
  """{set: {"input": scores, "variants": [variant + scores, ...]}} for a TIP run."""
  for v in variants:
    if v.get("mode", "full") not in MODES:
      raise ValueError(f"variant {v}: mode must be one of {tuple(MODES)}")
  restorer = TIPRestorer.from_checkpoint(workdir)
  scorer = scoring.Scorer.load("psnr,ssim,lpips")
  out = {}
  with tempfile.TemporaryDirectory() as folder:
    for eval_set in sets.ensure_embedded(folder, size=restorer.resolution, count=count,
                                         seed=seed, split=split):
      out[eval_set.name] = _measure_set(restorer, scorer, eval_set, variants, steps, batch)
  return out


def _measure_set(restorer: TIPRestorer, scorer: scoring.Scorer, eval_set: EvalSet,
                 variants, steps: int, batch: int) -> dict:
  batches = list(eval_set.batches(batch))
  gt = [b.gt for b in batches]
  result = {"input": _score(scorer, np.concatenate([b.inputs for b in batches]),
                            np.concatenate(gt)),
            "variants": []}
  for variant in variants:
    options = {k: v for k, v in variant.items() if k not in _NOT_RESTORE_OPTIONS}
    mode = MODES[variant.get("mode", "full")]
    variant_steps = variant.get("steps", steps)
    sampling = restorer
    if "timestep_spacing" in variant:  # what `model.timestep_spacing` sets at build time
      sampling = copy.copy(restorer)
      sampling.schedule = restorer.schedule.replace(
          timestep_spacing=variant["timestep_spacing"])
    started, restored = time.time(), []
    for b in batches:
      semantic, restoration = mode.prompts(b)
      restored.append(sampling.restore_batch(b.inputs, semantic, restoration,
                                             steps=variant_steps,
                                             seed=list(range(len(b.ids))), upsample=False,
                                             **options))
    scores = _score(scorer, np.concatenate(restored), np.concatenate(gt))
    result["variants"].append({"mode": mode.name, "steps": variant_steps,
                               "timestep_spacing": sampling.schedule.timestep_spacing,
                               **options, **scores,
                               "seconds": round(time.time() - started, 1)})
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a TIP run (its latest checkpoint)")
  parser.add_argument("--variants", default="", help="JSON list of restore_batch keyword "
                      "dicts (plus mode: full | blind; steps, which overrides --steps; "
                      "timestep_spacing: leading | trailing | linspace); default: the "
                      "module's list")
  parser.add_argument("--count", type=int, default=48)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default="heldout", help="the bundled photos the sets are "
                      "cut from: heldout (scoring) or, to choose options on, train+extra")
  args = parser.parse_args()
  from forward import machine  # benchmarks/ is on the path when this runs as a script
  variants = json.loads(args.variants) if args.variants else DEFAULT_VARIANTS
  result = measure(args.workdir, variants, args.count, args.steps, seed=args.seed,
                   split=args.split)
  print(json.dumps({"workdir": args.workdir, "sets": result, "config": vars(args),
                    "machine": machine()}))


if __name__ == "__main__":
  main()

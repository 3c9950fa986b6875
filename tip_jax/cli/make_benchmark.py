"""Usage: tip-make-benchmark --kind coco|div2k|embedded --out DIR [--images DIR]
                          [--captions FILE] [--count N] [--size S] [--seed K]

The paper's evaluation sets, written once so that every model is scored on the same inputs.

    tip-make-benchmark --kind coco --images val2017 --captions captions_val2017.json --out sets
    tip-make-benchmark --kind div2k --images DIV2K_valid_HR --out sets
    tip-make-benchmark --kind embedded --out sets

coco: `--count` (3000) seeded image-caption pairs of COCO val2017, one caption each,
short side to `--size` (512) and centre crop (PIL's antialiased bicubic), then two sets:
OUT/coco_param_512 (TIP's parameterised degradation, restoration prompts with values
and type-only) and OUT/coco_realesrgan_512 (Real-ESRGAN x4plus, the 128^2 LQ and its
bicubic to 512^2, prompt "Remove all degradation"). An image that cannot be read is
skipped with a warning naming it and the next image of the seeded order takes its
place, so the sets still have `--count` examples; set.json lists the skipped files.
div2k: StableSR's protocol: random 512^2 crops of the DIV2K validation HR images (an
equal share of `--count` from each), Real-ESRGAN degradation, no captions.
embedded: both sets from the photos bundled with scikit-image (16 crops at 64^2 by
default): no download needed.

Each set folder holds gt/, input/, lq/ (Real-ESRGAN sets), index.jsonl and set.json
(arguments, degradation settings, a SHA-256 of the files). A set is renamed into
place only when complete; running the same command again keeps complete sets, and
other arguments into the same --out are refused.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from tip_jax.cli import common, data_flags
from tip_jax.errors import DataError
from tip_jax.eval import sets

PROG = "tip-make-benchmark"
_KIND = flags.DEFINE_enum("kind", None, list(sets.KINDS), "Which benchmark to build.")
_COUNT = flags.DEFINE_integer("count", None, "Examples per set (default 3000, 16 for "
                              "--kind=embedded).")
for _name in ("images", "captions", "size", "out", "seed"):
  flags.declare_key_flag(_name)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(PROG, f"unexpected arguments {' '.join(argv[1:])} (inputs are flags)")
  if not _KIND.value:
    common.fail(PROG, f"--kind is required ({', '.join(sets.KINDS)})")
  if not common.OUT.value:
    common.fail(PROG, "--out is required (the folder the sets go in)")
  kind, out, size = _KIND.value, common.OUT.value, data_flags.SIZE.value
  if kind == "embedded" and (data_flags.IMAGES.value or data_flags.CAPTIONS.value):
    raise DataError("--kind=embedded reads the photos bundled with scikit-image; "
                    "drop --images and --captions")
  kept = {name for name in sets.set_names(kind, size) if os.path.isdir(os.path.join(out, name))}
  try:
    built = sets.build(kind, out, size=size, count=_COUNT.value, seed=common.SEED.value,
                       images=data_flags.IMAGES.value, captions=data_flags.CAPTIONS.value,
                       progress=True)
  except KeyboardInterrupt:
    common.fail(PROG, f"interrupted; complete sets in {out} are kept, run the same "
                "command again to finish")
  for evalset in built:
    skipped = evalset.meta["skipped"]
    why = f"; skipped {len(skipped)}: {', '.join(skipped)}" if skipped else ""
    done = "already built, kept" if evalset.name in kept else "wrote"
    print(f"{PROG}: {done} {evalset.path}: {len(evalset)} examples at {evalset.size}^2 "
          f"(sha256 {evalset.meta['content_sha256'][:12]}){why}")


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__]])


if __name__ == "__main__":
  run()

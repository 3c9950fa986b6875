"""Usage: tip-restore INPUT... --out DIR --checkpoint CKPT [--restoration PROMPT] [options]

    tip-restore photo.jpg more_photos/ --checkpoint /tmp/tip_tiny --out restored/ \\
      --semantic "a red motorcycle" --restoration "Deblur with sigma 2.0;" --steps 50

    tip-restore photo.jpg --checkpoint /tmp/tip_tiny --out restored/ --restoration auto

Restores image files, or every image in the given folders, into DIR as PNGs (same stem).
With --restoration auto each image's prompt is estimated (as tip-estimate does, a JPEG
file's quality read from the file), printed and used; the estimate describes the image
as given, so it is restored at its own size. A bad input (missing, not an image,
truncated) is reported on one line and the others are still restored; an existing
output is kept unless --overwrite. A restoration prompt that does not parse, or a
checkpoint or estimator that does not load, stops before any image is touched. The
exit status is 1 when anything failed.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from tqdm import tqdm

from tip_jax.cli import common, estimating, sampling
from tip_jax.degrade import BLIND_PROMPT
from tip_jax.errors import ImageError
from tip_jax.image_io import read_rgb, write_png
from tip_jax.restore import is_auto

PROG = "tip-restore"
_RESTORATION = flags.DEFINE_string("restoration", BLIND_PROMPT, "Restoration prompt c_r, or "
                                   "\"auto\": estimated for each image and printed.")


def main(argv: list[str]) -> None:
  inputs = argv[1:]
  if not inputs:
    common.fail(PROG, f"give at least one INPUT file or folder (usage: {PROG} INPUT... "
                "--out DIR --checkpoint CKPT)")
  if not common.OUT.value:
    common.fail(PROG, "--out DIR is required")
  if os.path.exists(common.OUT.value) and not os.path.isdir(common.OUT.value):
    common.fail(PROG, f"--out {common.OUT.value} exists and is not a folder")
  sampling.check_options(PROG)
  auto = is_auto(_RESTORATION.value)
  if not auto:
    sampling.check_prompt_wording(PROG, _RESTORATION.value)
  restorer = sampling.load_restorer(PROG)
  if auto:
    restorer.estimator = estimating.load(PROG)
  files = common.expand(inputs)
  if not files:
    common.fail(PROG, f"no images found in {', '.join(inputs)}")

  failures, written, claimed = 0, 0, {}
  for path in tqdm(files, desc=PROG, unit="image", disable=None):
    name = os.path.splitext(os.path.basename(path))[0] + ".png"
    target = os.path.join(common.OUT.value, name)
    problem = None
    if target in claimed:
      problem = f"{path}: its output {target} is already taken by {claimed[target]}"
    elif os.path.exists(target) and not common.OVERWRITE.value:
      problem = f"{path}: {target} exists; pass --overwrite to replace it"
    else:
      try:
        image = read_rgb(path)
        prompt = (restorer.prompt_for(restorer.estimator.estimate_file(path)) if auto
                  else _RESTORATION.value)
      except ImageError as e:
        problem = str(e)
    if problem:
      tqdm.write(f"{PROG}: {problem}", file=sys.stderr)
      failures += 1
      continue
    claimed[target] = path
    if auto:
      tqdm.write(f"{PROG}: {path}: estimated restoration prompt \"{prompt}\"")
    restored = restorer.restore(image, restoration_prompt=prompt, upsample=not auto,
                                **sampling.restore_options())
    write_png(restored, target)
    written += 1
  print(f"{PROG}: restored {written} of {len(files)} image(s) into {common.OUT.value}")
  if failures:
    sys.exit(1)


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__], common, sampling, estimating])


if __name__ == "__main__":
  run()

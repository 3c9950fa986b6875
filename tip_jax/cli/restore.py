"""Usage: tip-restore INPUT... --out DIR --checkpoint CKPT [--restoration PROMPT] [options]

    tip-restore photo.jpg more_photos/ --checkpoint /tmp/tip_tiny --out restored/ \\
      --semantic "a red motorcycle" --restoration "Deblur with sigma 2.0;" --steps 50

Restores image files, or every image in the given folders, into DIR as PNGs (same stem).
A bad input (missing, not an image, truncated) is reported on one line and the others
are still restored; an existing output is kept unless --overwrite. A restoration prompt
that does not parse, or a checkpoint that does not load, stops before any image is
touched. The exit status is 1 when anything failed.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from tqdm import tqdm

from tip_jax.cli import common, sampling
from tip_jax.degrade import BLIND_PROMPT
from tip_jax.errors import ImageError
from tip_jax.image_io import IMAGE_SUFFIXES, read_rgb, write_png

PROG = "tip-restore"
_RESTORATION = flags.DEFINE_string("restoration", BLIND_PROMPT, "Restoration prompt c_r.")


def expand(inputs: list[str]) -> list[str]:
  """Files as given; folders -> their image files (by suffix, sorted, not recursive)."""
  out = []
  for path in inputs:
    if os.path.isdir(path):
      out += sorted(os.path.join(path, f) for f in os.listdir(path)
                    if f.lower().endswith(IMAGE_SUFFIXES)
                    and os.path.isfile(os.path.join(path, f)))
    else:
      out.append(path)
  return out


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
  sampling.check_prompt_wording(PROG, _RESTORATION.value)
  restorer = sampling.load_restorer(PROG)
  files = expand(inputs)
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
      except ImageError as e:
        problem = str(e)
    if problem:
      tqdm.write(f"{PROG}: {problem}", file=sys.stderr)
      failures += 1
      continue
    claimed[target] = path
    restored = restorer.restore(image, restoration_prompt=_RESTORATION.value,
                                **sampling.restore_options())
    write_png(restored, target)
    written += 1
  print(f"{PROG}: restored {written} of {len(files)} image(s) into {common.OUT.value}")
  if failures:
    sys.exit(1)


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__], common, sampling])


if __name__ == "__main__":
  run()

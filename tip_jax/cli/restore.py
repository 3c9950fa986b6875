"""`tip-restore INPUT... --out DIR --checkpoint CKPT --restoration "Deblur with sigma 3.0"`

Restores image files, or every image in the given folders, into DIR as PNGs (same stem).
A bad input (missing, not an image, truncated) is reported on one line and the others
are still restored; an existing output is kept unless --overwrite. A restoration prompt
that does not parse, or a checkpoint that does not load, stops before any image is
touched. The exit status is 1 when anything failed.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from tqdm import tqdm

from tip_jax.cli import common
from tip_jax.cli.images import IMAGE_SUFFIXES, ImageError, read_rgb, write_png
from tip_jax.degrade import BLIND_PROMPT

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
    sys.exit(f"{PROG}: give at least one INPUT file or folder (usage: {PROG} INPUT... "
             "--out DIR --checkpoint CKPT)")
  if not common.OUT.value:
    sys.exit(f"{PROG}: --out DIR is required")
  if os.path.exists(common.OUT.value) and not os.path.isdir(common.OUT.value):
    sys.exit(f"{PROG}: --out {common.OUT.value} exists and is not a folder")
  common.check_options(PROG)
  common.check_prompt_wording(PROG, _RESTORATION.value)
  restorer = common.load_restorer(PROG, [_RESTORATION.value])
  files = expand(inputs)
  if not files:
    sys.exit(f"{PROG}: no images found in {', '.join(inputs)}")

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
                                **common.restore_options())
    write_png(restored, target)
    written += 1
  print(f"{PROG}: restored {written} of {len(files)} image(s) into {common.OUT.value}")
  if failures:
    sys.exit(1)


def run() -> None:
  app.run(main)


if __name__ == "__main__":
  run()

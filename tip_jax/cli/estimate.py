"""Usage: tip-estimate IMAGE... [--jsonl] [--estimator DIR]

    tip-estimate photo.jpg scans/
    tip-estimate photo.jpg --jsonl > prompts.jsonl

Estimates how each image was degraded and prints the restoration prompt TIP
understands, one line per image ("photo.jpg: Deblur with sigma 1.4; Dejpeg with
quality 62;"), or with --jsonl one JSON object per line: the prompt, and for
Real-ESRGAN's mix ("Remove all degradation") and each stage its probability, its
strength on the prompt's grid and where the value came from ("estimate": the network;
"file": a JPEG file's quality, read exactly from its quantisation tables). Folders give
their image files. (The flag is --jsonl, not --json: tip-eval's --json names a file.) Feed a prompt to `tip-restore --restoration "..."`, edited if you disagree, or
let `tip-restore --restoration auto` estimate it for you. A bad input (missing, not an
image, too small) is reported on one line and the others are still estimated; the exit
status is then 1.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from tip_jax.cli import common, estimating
from tip_jax.errors import ImageError

PROG = "tip-estimate"
_JSONL = flags.DEFINE_bool("jsonl", False, "Print one JSON object per image (JSON Lines) "
                           "with per-stage probabilities, values and their sources.")
NONE_FOUND = "(no degradation found: the empty restoration prompt)"


def main(argv: list[str]) -> None:
  files = common.expand(argv[1:])
  if not files:
    common.fail(PROG, f"give at least one IMAGE file or folder (usage: {PROG} IMAGE...)")
  estimator = estimating.load(PROG)
  failures = 0
  for path in files:
    try:
      estimate = estimator.estimate_file(path)
    except ImageError as e:
      print(f"{PROG}: {e}", file=sys.stderr)
      failures += 1
      continue
    if _JSONL.value:
      print(json.dumps({"image": path, **estimate.to_json()}), flush=True)
    else:
      print(f"{path}: {estimate.prompt() or NONE_FOUND}", flush=True)
  if failures:
    sys.exit(1)


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__], estimating])


if __name__ == "__main__":
  run()

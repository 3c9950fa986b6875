"""Usage: tip-convert-inception IN.pth OUT.safetensors

    tip-convert-inception pt_inception-2015-12-05-6726825d.pth fid_inception.safetensors

Converts pytorch-fid's FID Inception weights into tip_jax's format.

IN is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (from its GitHub release
`fid_weights`; nothing is downloaded here). It is read without torch and without
running code from the file. OUT is what the FID metric loads
(`tip_jax.metrics.inception.load_inception`); it is written atomically.
"""

from __future__ import annotations

import sys

from tip_jax.cli import common
from tip_jax.convert.inception import convert_file

PROG = "tip-convert-inception"


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    common.fail(PROG, "give IN.pth and OUT.safetensors (usage: tip-convert-inception "
                "pt_inception-2015-12-05-6726825d.pth fid_inception.safetensors)")
  count = convert_file(argv[1], argv[2])
  print(f"{PROG}: wrote {count} tensors to {argv[2]}")


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__]])


if __name__ == "__main__":
  run()

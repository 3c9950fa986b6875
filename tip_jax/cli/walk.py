"""Usage: tip-walk INPUT --checkpoint CKPT [--out walk.png] [--rows ... --cols ...]

    tip-walk photo.jpg --checkpoint /tmp/tip_tiny --out walk.png \\
      --rows "Denoise with sigma {}" --row_values 0.02,0.06,0.10 \\
      --cols "Deblur with sigma {}" --col_values 1.0,2.0,3.0

The paper's prompt-space walk.

One input restored over a grid of two restoration strengths (Fig. 6 / Fig. 9): rows
walk one clause ("Denoise with sigma {}"), columns another ("Deblur with sigma {}"),
each cell's prompt is both clauses together, and every cell uses the same seed, so only
the prompt changes across the grid. Saved as one labelled image, the input on top.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags
from PIL import Image
from tqdm import tqdm

from tip_jax.cli import common, sampling
from tip_jax.errors import ImageError, PromptError
from tip_jax.image_io import labelled_grid, read_rgb, write_png

PROG = "tip-walk"
_ROWS = flags.DEFINE_string("rows", "Denoise with sigma {}", "Row clause; {} takes a value.")
_ROW_VALUES = flags.DEFINE_list("row_values", ["0.02", "0.06", "0.10"], "Row values.")
_COLS = flags.DEFINE_string("cols", "Deblur with sigma {}", "Column clause; {} takes a value.")
_COL_VALUES = flags.DEFINE_list("col_values", ["1.0", "2.0", "3.0"], "Column values.")


def walk_prompts(rows: str, row_values: list[str], cols: str, col_values: list[str]
                 ) -> list[list[str]]:
  """The grid's prompts, each in canonical form (raises PromptError)."""
  return [[sampling.canonical_prompt(f"{rows.format(r)}; {cols.format(c)};") for c in col_values]
          for r in row_values]


def walk_grid(image: np.ndarray, label: str, grid: list[list[str]],
              restored: list[np.ndarray]) -> Image.Image:
  """The walk as one labelled image: the input (under `label`) alone on the top row,
  then the uint8 restorations, row by row, each under its prompt (`grid`)."""
  # Every cell is shown at the first one's size: walking an "Upsample to" clause changes
  # the output size along that axis, and the input is smaller still.
  size = restored[0].shape[1::-1]
  as_tile = lambda a: np.asarray(Image.fromarray(a).resize(size, Image.BICUBIC)) / 255.0  # noqa: E731
  columns = len(grid[0])
  shown = as_tile(image)
  header = [shown] + [np.ones_like(shown)] * (columns - 1)
  labels = [label] + [""] * (columns - 1) + [p for line in grid for p in line]
  return labelled_grid(header + [as_tile(a) for a in restored], labels, columns)


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    common.fail(PROG, f"give exactly one INPUT image (usage: {PROG} INPUT --checkpoint CKPT "
                "--out walk.png)")
  out = common.OUT.value or "walk.png"
  if os.path.exists(out) and not common.OVERWRITE.value:
    common.fail(PROG, f"{out} exists; pass --overwrite to replace it")
  sampling.check_options(PROG)
  if "{}" not in _ROWS.value or "{}" not in _COLS.value:
    common.fail(PROG, "--rows and --cols each need a {} where the value goes")
  try:
    grid = walk_prompts(_ROWS.value, _ROW_VALUES.value, _COLS.value, _COL_VALUES.value)
  except PromptError as e:
    common.fail(PROG, f"restoration prompt: {e}")
  cells = [p for line in grid for p in line]
  try:
    image = read_rgb(argv[1])
  except ImageError as e:
    common.fail(PROG, str(e))
  restorer = sampling.load_restorer(PROG)

  restored = [restorer.restore(image, restoration_prompt=p, **sampling.restore_options())
              for p in tqdm(cells, desc=PROG, unit="cell", disable=None)]
  write_png(walk_grid(image, f"input: {os.path.basename(argv[1])}", grid, restored), out)
  print(f"{PROG}: wrote {out}: {len(grid)}x{len(grid[0])} restorations of {argv[1]}")


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__], common, sampling])


if __name__ == "__main__":
  run()

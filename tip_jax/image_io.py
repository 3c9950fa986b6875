"""Image files at the edges of tip_jax: reading with one-line errors, PNG writing that
never leaves a partial file behind (the atomic writer other files reuse), and labelled
grids (CLIs, trainer samples, evaluator)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import textwrap
from typing import BinaryIO, Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from tip_jax.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def _opened(path: str) -> Iterator[Image.Image]:
  """The file as a PIL image, any failure to open or decode it as one ImageError line."""
  try:
    with Image.open(path) as im:
      yield im
  except FileNotFoundError:
    raise ImageError(f"{path}: no such file") from None
  except IsADirectoryError:
    raise ImageError(f"{path}: is a folder, not an image") from None
  except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
    raise ImageError(f"{path}: not a readable image ({e})") from None


def read_rgb(path: str) -> np.ndarray:
  """uint8 (H, W, 3); decodes the whole file, so a truncated one fails here, not later."""
  with _opened(path) as im:
    return np.asarray(im.convert("RGB"))


def quantization_tables(path: str) -> dict[int, list[int]] | None:
  """A JPEG file's quantisation tables (PIL's `quantization`: table id -> 64 entries,
  row-major), None for any other format; what the degradation estimator reads the
  file's JPEG quality from."""
  with _opened(path) as im:
    return {k: list(v) for k, v in im.quantization.items()} if im.format == "JPEG" else None


def as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 (H, W) or (H, W, 1|3|4) -> uint8 (H, W, 3): grey repeated, alpha dropped (the
  conversion `read_rgb` applies to files, for arrays a caller hands over)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got {image.dtype}")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
    raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
  return np.broadcast_to(image[:, :, :3], image.shape[:2] + (3,))


def image_size(path: str) -> tuple[int, int]:
  """(width, height) from the file's header alone: what a server checks against its
  limits before it spends memory decoding an upload."""
  with _opened(path) as im:
    return im.size


def write_atomically(path: str, write: Callable[[BinaryIO], None]) -> None:
  """Calls `write` on a temporary file in `path`'s folder, then renames it to `path`,
  so an interrupted write never replaces (or half-writes) `path`. The file gets the
  permissions a plain `open` would (0666 less the umask), not `mkstemp`'s owner-only
  0600. Shared by every file tip_jax writes that a later run reads back (images,
  converted weights, cached statistics)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1], dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_png(image: np.ndarray | Image.Image, path: str) -> None:
  """Writes a PNG atomically (see `write_atomically`)."""
  im = image if isinstance(image, Image.Image) else Image.fromarray(image)
  write_atomically(path, lambda f: im.save(f, format="PNG"))


def labelled_grid(tiles: list[np.ndarray], labels: list[str], columns: int = 4) -> Image.Image:
  """Equal-sized float [0, 1] tiles in rows of `columns`, each with its wrapped label
  underneath."""
  height, width = tiles[0].shape[:2]
  font = ImageFont.load_default(size=max(10, min(height, width) // 20))
  chars = max(12, int(width / (0.55 * font.size)))
  wrapped = [textwrap.fill(label, chars) for label in labels]
  text_h = max(w.count("\n") + 1 for w in wrapped) * (font.size + 3) + 6
  rows = -(-len(tiles) // columns)
  grid = Image.new("RGB", (columns * width, rows * (height + text_h)), "white")
  draw = ImageDraw.Draw(grid)
  for i, (tile, text) in enumerate(zip(tiles, wrapped)):
    x, y = (i % columns) * width, (i // columns) * (height + text_h)
    grid.paste(Image.fromarray(np.round(np.clip(tile, 0, 1) * 255).astype(np.uint8)), (x, y))
    draw.multiline_text((x + 4, y + height + 3), text, fill="black", font=font, spacing=3)
  return grid

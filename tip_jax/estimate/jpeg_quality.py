"""The quality a JPEG file was saved with, read from its quantisation tables.

libjpeg (the IJG library behind PIL, most cameras' software, browsers' encoders)
writes quality Q as the Annex K example tables scaled by

    S = 5000 / Q  (Q < 50)    or    S = 200 - 2 Q  (Q >= 50)      (integer division)
    entry = clamp((base * S + 50) / 100, 1, 255)                   (integer, baseline)

Each Q in 1..100 gives different tables, so a file's tables name its Q exactly:
`ijg_quality` computes all hundred and looks the file's up. Tables that match none
(an encoder with its own tables: some cameras, mozjpeg's tuned tables) get the Q whose
scaled luma table is closest, marked as not exact.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from tip_jax.degrade.jpeg import ANNEX_K_CHROMA, ANNEX_K_LUMA

QUALITIES = range(1, 101)


def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
  """libjpeg's (luma, chroma) tables for `quality`, row-major, as `jpeg_set_quality(...,
  force_baseline=TRUE)` makes them."""
  q = min(max(int(quality), 1), 100)
  scale = 5000 // q if q < 50 else 200 - 2 * q
  table = lambda base: np.clip((base.astype(np.int64) * scale + 50) // 100, 1, 255)  # noqa: E731
  return table(ANNEX_K_LUMA), table(ANNEX_K_CHROMA)


@functools.cache
def _all_tables() -> np.ndarray:
  """(100, 2, 64): every quality's luma and chroma tables."""
  return np.stack([np.stack(ijg_tables(q)).reshape(2, 64) for q in QUALITIES])


@dataclasses.dataclass(frozen=True)
class FileQuality:
  quality: int
  exact: bool   # the tables are libjpeg's for `quality`; False: the nearest IJG quality


def ijg_quality(tables: dict[int, list[int]]) -> FileQuality | None:
  """`tables`: PIL's `Image.quantization` of a JPEG file (table id -> 64 entries in
  row-major order; 0 is luma, 1 chroma when present). None when there is no table."""
  if not tables or 0 not in tables:
    return None
  given = [np.asarray(tables[k], np.int64).reshape(64) for k in sorted(tables)[:2]]
  every = _all_tables()[:, :len(given)]
  match = np.flatnonzero((every == np.stack(given)).all(axis=(1, 2)))
  if match.size:
    return FileQuality(int(QUALITIES[match[0]]), True)
  # Nearest in log space: a table's entries scale multiplicatively with S.
  error = np.abs(np.log(every[:, 0]) - np.log(np.maximum(given[0], 1))).sum(axis=1)
  return FileQuality(int(QUALITIES[int(np.argmin(error))]), False)

"""A JPEG file's quality comes back exactly from its quantisation tables."""

import io

import numpy as np
import pytest
from PIL import Image

from tip_jax.estimate.jpeg_quality import FileQuality, QUALITIES, ijg_quality, ijg_tables


def _tables(quality: int | None = None, mode: str = "RGB", **save) -> dict:
  pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  if quality is not None:
    save["quality"] = quality
  Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", **save)
  return Image.open(buffer).quantization


@pytest.mark.parametrize("quality", [1, 5, 10, 30, 42, 50, 51, 75, 90, 95, 99, 100])
def test_the_quality_a_file_was_saved_with_comes_back_exactly(quality):
  assert ijg_quality(_tables(quality)) == FileQuality(quality, exact=True)


def test_every_quality_has_its_own_tables_and_greyscale_and_subsampling_read_too():
  assert len({np.stack(ijg_tables(q)).tobytes() for q in QUALITIES}) == 100
  assert ijg_quality(_tables(63, mode="L")) == FileQuality(63, exact=True)   # luma table only
  assert ijg_quality(_tables(63, subsampling=0)) == FileQuality(63, exact=True)   # 4:4:4


def test_tables_no_quality_makes_get_the_nearest_marked_inexact():
  luma, chroma = ijg_tables(70)
  luma = luma.reshape(64).copy()
  luma[5] += 3                               # an encoder with its own tables
  custom = _tables(qtables=[luma.tolist(), chroma.reshape(64).tolist()])
  assert ijg_quality(custom) == FileQuality(70, exact=False)
  assert ijg_quality({}) is None and ijg_quality(None) is None

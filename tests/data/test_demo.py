"""The bundled photographs: a fixed train / held-out split, every record RGB."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tip_jax.data import demo, sources
from tip_jax.errors import DataError


def test_split_is_disjoint_and_covers_every_photo():
  train, heldout = demo.photos("train"), demo.photos("heldout")
  assert {p[0] for p in train}.isdisjoint(p[0] for p in heldout)
  assert len(train) + len(heldout) == len(demo.PHOTOS) and len(heldout) >= 3
  with pytest.raises(DataError, match="demo:val: expected one of train, heldout"):
    demo.photos("val")


def test_photos_come_from_several_packages_and_a_missing_one_is_named():
  packages = {sources.open_source("demo")[i]["source"] for i in range(len(demo.photos("train")))}
  assert packages == {"skimage", "sklearn", "matplotlib"}
  with pytest.raises(DataError, match="needs the no_such_package_tip package"):
    demo._location("no_such_package_tip:data/x.png")


def test_sources_read_their_split_as_rgb():
  for spec, split in (("demo", "train"), ("demo:heldout", "heldout")):
    source = sources.open_source(spec)
    assert len(source) == len(demo.photos(split))
    for i in range(len(source)):
      record = source[i]
      with Image.open(io.BytesIO(record["image"])) as im:
        assert im.mode == "RGB", record["id"]
      assert record["captions"] and all(isinstance(c, str) for c in record["captions"])

"""The bundled photographs: a fixed train / held-out split, every record RGB."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tip_jax.data import demo, sources
from tip_jax.errors import DataError


def test_splits_are_disjoint_and_cover_every_photo():
  splits = [{p[0] for p in demo.photos(name)} for name in demo.SPLITS]
  assert sum(map(len, splits)) == len(set().union(*splits)) == len(demo.PHOTOS)
  assert len(demo.photos("heldout")) >= 3
  assert demo.photos("train+extra") == demo.photos("train") + demo.photos("extra")
  for bad in ("val", "train+train", "train+"):
    expected = re.escape(f"demo:{bad}: expected one of train, extra, heldout")
    with pytest.raises(DataError, match=expected):
      demo.photos(bad)


def test_photos_come_from_several_packages_and_a_missing_one_is_named():
  def packages(spec):
    source = sources.open_source(spec)
    return {source[i]["source"] for i in range(len(source))}
  # The prior's and estimator's photos need only the core dependencies; gradio (the demo
  # and test extras) brings the extra ones.
  assert packages("demo") == {"skimage", "sklearn", "matplotlib"}
  assert packages("demo:extra") == {"gradio"}
  with pytest.raises(DataError, match="needs the no_such_package_tip package, which is not "
                     "installed; install tip_jax's dependencies"):
    demo._location("no_such_package_tip:data/x.png")


def test_sources_read_their_split_as_rgb():
  for spec, split in (("demo", "train"), ("demo:heldout", "heldout"),
                      ("demo:train+extra", "train+extra")):
    source = sources.open_source(spec)
    assert len(source) == len(demo.photos(split))
    for i in range(len(source)):
      record = source[i]
      with Image.open(io.BytesIO(record["image"])) as im:
        assert im.mode == "RGB", record["id"]
      assert record["captions"] and all(isinstance(c, str) for c in record["captions"])

"""The clean images of benchmark sets, drawn reproducibly from COCO, DIV2K or the demo photos.

Each source yields examples in slot order (slot k = the k-th example of the set) and
draws everything an example needs from (seed, a stream tag, k) alone, so a set of
`count` examples is a prefix of a larger one with the same seed. A COCO image that
cannot be read is skipped with a warning naming it, and the next image of the seeded
order takes its slot, so the set still has `count` examples; the skipped files are
listed in the set's `set.json`. DIV2K crops come from a fixed list of 100 files, so a
broken one stops the build instead (it means a broken download).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterator, Protocol

import numpy as np
from absl import logging

from tip_jax.data import demo, images, inputs
from tip_jax.errors import DataError
from tip_jax.image_io import IMAGE_SUFFIXES, read_rgb

# Stream tags: what each seeded draw is for, so no two draws share a random stream
# (the degradation parameters use `sample_params`' own (seed, k) streams).
_ORDER, _CAPTION, _CROP = 1, 2, 3
# Embedded crops span 1/ZOOM .. all of a photo's short side.
EMBEDDED_ZOOM = 4.0
_WHY = {images.SKIPPED_CORRUPT: "corrupt or truncated", images.SKIPPED_NOT_IMAGE: "not an image",
        images.SKIPPED_HUGE: "over the pixel cap"}
RESAMPLER = ("PIL bicubic, antialiased (support widens with the reduction), one resampling "
             "of the full-resolution decode; EXIF orientation applied, any mode to RGB")


@dataclasses.dataclass(frozen=True)
class Clean:
  """One example's ground truth: the uint8 (size, size, 3) image, its caption, and the
  file (and crop) it came from."""

  image: np.ndarray
  caption: str
  source: str


def _rng(seed: int, stream: int, k: int) -> np.random.Generator:
  return np.random.default_rng([seed, stream, k])


class Coco:
  """Seeded image-caption pairs of a COCO captions file: short side to `size`, centre crop."""

  def __init__(self, image_dir: str, captions: str, size: int, seed: int):
    self._data = inputs.coco(image_dir, captions)     # DataError for bad paths or JSON
    if not self._data.entries:
      raise DataError(f"{captions}: lists no images")
    self.image_dir, self.size, self.seed = image_dir, size, seed
    self.skipped: list[str] = []
    self.signature = {"images": os.path.abspath(image_dir),
                      "captions": os.path.abspath(captions), "crop": "short side, centre",
                      "resampler": RESAMPLER}

  def _skip(self, name: str, why: str) -> None:
    logging.warning("%s: skipped (%s); the next image of the seeded order takes its place",
                    name, why)
    self.skipped.append(name)

  def examples(self, count: int) -> Iterator[Clean]:
    entries = self._data.entries
    order = _rng(self.seed, _ORDER, 0).permutation(len(entries))
    made = 0
    for rank, index in enumerate(order):
      if made == count:
        break
      entry = entries[index]
      name = os.path.relpath(entry.path, self.image_dir)
      captions = [c for c in entry.captions if c.strip()]
      if not captions:
        self._skip(name, "no caption")
        continue
      try:
        with open(entry.path, "rb") as f:
          data = f.read()
        image, _ = images.crop(data, self.size, np.array([0.0, 0.5, 0.5]), exact=True)
      except OSError as e:
        self._skip(name, f"cannot read it: {e.strerror or e}")
        continue
      except images.BadData as e:
        self._skip(name, _WHY.get(e.reason, e.reason))
        continue
      caption = captions[_rng(self.seed, _CAPTION, rank).integers(len(captions))]
      made += 1
      yield Clean(image, caption, name)
    if made < count:
        raise DataError(f"{self.image_dir}: only {made} usable images of {len(entries)} "
                      f"listed, {count} asked for")


class Div2K:
  """StableSR's DIV2K-val protocol: random `size`^2 crops at native resolution, an equal
  share from each image of the folder (sorted by name), no captions."""

  def __init__(self, image_dir: str, size: int, seed: int):
    if not os.path.isdir(image_dir):
      raise DataError(f"{image_dir}: no such image folder")
    self.files = sorted(f for f in os.listdir(image_dir)
                        if f.lower().endswith(IMAGE_SUFFIXES))
    if not self.files:
      raise DataError(f"{image_dir}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    self.image_dir, self.size, self.seed = image_dir, size, seed
    self.skipped: list[str] = []
    self.signature = {"images": os.path.abspath(image_dir), "files": len(self.files),
                      "crop": "random, native resolution"}

  def examples(self, count: int) -> Iterator[Clean]:
    per_image = math.ceil(count / len(self.files))
    loaded: tuple[str, np.ndarray] | None = None
    for k in range(count):
      name = self.files[k // per_image]
      if loaded is None or loaded[0] != name:
        loaded = name, read_rgb(os.path.join(self.image_dir, name))   # ImageError if broken
      image = loaded[1]
      h, w = image.shape[:2]
      if min(h, w) < self.size:
        raise DataError(f"{os.path.join(self.image_dir, name)}: {w}x{h} is smaller than "
                        f"the {self.size}^2 crops")
      top, left = (int(_rng(self.seed, _CROP, k).integers(n - self.size + 1)) for n in (h, w))
      yield Clean(image[top:top + self.size, left:left + self.size].copy(), "",
                  f"{name}@{left},{top}")


class Embedded:
  """The held-out photos bundled with scikit-image (`tip_jax.data.demo`, never trained
  on), in turn, each time a seeded square crop at a seeded zoom and one of the photo's
  two captions: a set that needs no download, for CI and fresh machines. Another
  `split` of the bundled photos (e.g. "train") gives a validation set to choose
  inference options on without looking at the held-out photos."""

  def __init__(self, size: int, seed: int, split: str = "heldout"):
    self.source = demo.DemoSource(split)
    self.size, self.seed = size, seed
    self.skipped: list[str] = []
    self.signature = {"photos": [p[0] for p in self.source.photos], "max_zoom": EMBEDDED_ZOOM,
                      "crop": "random square, random zoom", "resampler": RESAMPLER}

  def examples(self, count: int) -> Iterator[Clean]:
    for k in range(count):
      photo = k % len(self.source)
      record = self.source[photo]
      rng = _rng(self.seed, _CROP, k)
      try:
        image, _ = images.crop(record["image"], self.size, rng.random(3),
                               max_zoom=EMBEDDED_ZOOM, exact=True)
      except images.BadData as e:   # the package's own file: a broken install
        raise DataError(f"demo photo {record['id']}: {e}") from None
      captions = record["captions"]
      yield Clean(image, captions[rng.integers(len(captions))], self.source.photos[photo][0])


class Source(Protocol):
  signature: dict[str, Any]    # what the set was drawn from, recorded in set.json
  skipped: list[str]           # files passed over so far

  def examples(self, count: int) -> Iterator[Clean]: ...


def open_source(kind: str, size: int, seed: int, image_dir: str | None,
                captions: str | None, split: str = "heldout") -> Source:
  """The ground-truth source of a set kind (`split`: the embedded kind's photos); DataError
  for missing or bad paths."""
  if kind == "embedded":
    return Embedded(size, seed, split)
  if not image_dir:
    raise DataError(f"--kind={kind} needs --images (the "
                    f"{'COCO val2017' if kind == 'coco' else 'DIV2K validation HR'} folder)")
  if kind == "div2k":
    return Div2K(image_dir, size, seed)
  if not captions:
    raise DataError("--kind=coco needs --captions (captions_val2017.json)")
  return Coco(image_dir, captions, size, seed)

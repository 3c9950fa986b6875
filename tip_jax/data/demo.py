"""A demo source that needs no set-up: photographs bundled with scikit-image.

These files ship inside the scikit-image package (no pooch download), and the captions
are the project's own. They are split once, here, into photos to train on (the shipped
prior in `tip_jax/assets/` and the README's main command) and photos held out for
evaluation (`tip-make-benchmark --kind embedded`, the estimator's tables), so that a
score on the held-out photos is never a score on training pixels. The stereo pair
`motorcycle_left`/`motorcycle_right` shows one scene, so both are on the training side.
With random crops at several zooms (see `DataConfig.max_zoom`) the training photos are
a small but real training set. The bytes are read as stored (PNG or JPEG), like records
from `tip-prepare`, except that greyscale photos are re-encoded as RGB PNGs: every record
of this source is RGB, so none is counted as a mode conversion.

Sources: `demo` (the training photos) and `demo:heldout`.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
from typing import Any

from PIL import Image

from tip_jax.errors import DataError

SPLITS = ("train", "heldout")

# (file in skimage/data, split, captions)
PHOTOS = (
    ("astronaut.png", "train", (
        "a smiling astronaut in an orange flight suit beside the American flag",
        "portrait of a woman astronaut holding her helmet, a space shuttle model behind her")),
    ("hubble_deep_field.jpg", "train", (
        "thousands of distant galaxies on a black sky, Hubble deep field",
        "a deep space photograph full of colourful galaxies")),
    ("ihc.png", "train", (
        "a microscope image of tissue stained brown and blue, immunohistochemistry",
        "stained glandular tissue under a microscope")),
    ("motorcycle_left.png", "train", (
        "a red motorcycle parked in a garage with shelves of boxes",
        "a classic red motorbike on a concrete floor")),
    ("motorcycle_right.png", "train", (
        "a red motorcycle in a garage, seen a little from the right",
        "a vintage red motorbike in front of shelves and boxes")),
    ("retina.jpg", "train", (
        "a fundus photograph of a human retina with red blood vessels",
        "the back of an eye, orange retina and optic disc")),
    ("camera.png", "train", (
        "a black and white photograph of a man with a camera on a tripod in a field",
        "a cameraman in a dark coat looking through his camera, buildings far behind")),
    ("coins.png", "train", (
        "rows of old silver coins on a dark background, black and white",
        "a grey photograph of ancient coins laid out in a grid")),
    ("gravel.png", "train", (
        "a close-up of grey gravel, many small stones",
        "a black and white texture of pebbles")),
    ("brick.png", "train", (
        "a brick wall in black and white",
        "rows of bricks laid in a pavement, grey texture")),
    ("grass.png", "train", (
        "a close-up of grass blades, black and white",
        "a grey texture of a lawn")),
    ("moon.png", "train", (
        "the surface of the moon with small craters, grey",
        "a black and white photograph of lunar terrain")),
    ("chelsea.png", "heldout", (
        "close-up of a tabby cat with green eyes",
        "the face of a ginger striped cat looking to the side")),
    ("coffee.png", "heldout", (
        "a cup of espresso on a red saucer with a spoon, on a wooden table",
        "coffee in a red cup seen from above")),
    ("rocket.jpg", "heldout", (
        "a rocket on the launch pad at dusk between lightning towers",
        "a white rocket standing on its launch pad under a blue evening sky")),
)


def photos(split: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
  """The PHOTOS rows of one split, in order."""
  if split not in SPLITS:
    raise DataError(f"demo:{split}: expected one of {', '.join(SPLITS)}")
  return tuple(p for p in PHOTOS if p[1] == split)


@functools.cache
def _records(split: str) -> tuple[dict[str, Any], ...]:
  data = importlib.resources.files("skimage") / "data"
  records = []
  for filename, _, captions in photos(split):
    path = data / filename
    if not path.is_file():
      raise DataError(f"demo: {filename} is not bundled with this scikit-image install "
                      f"(looked in {data}); use another data source")
    records.append({"image": _rgb_bytes(path.read_bytes()), "captions": list(captions),
                    "id": filename.rsplit(".", 1)[0], "source": "skimage"})
  return tuple(records)


def _rgb_bytes(data: bytes) -> bytes:
  """The file's bytes if it is RGB, else an RGB PNG of it (lossless)."""
  with Image.open(io.BytesIO(data)) as im:
    if im.mode == "RGB":
      return data
    out = io.BytesIO()
    im.convert("RGB").save(out, format="PNG")
    return out.getvalue()


class DemoSource:
  """One split of the bundled photographs as records; files are read once per process,
  on first use."""

  def __init__(self, split: str = "train"):
    self.photos = photos(split)
    self.split = split

  def __len__(self) -> int:
    return len(self.photos)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return _records(self.split)[index]

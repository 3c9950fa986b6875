"""A demo source that needs no set-up: the colour photographs bundled with scikit-image.

These eight files ship inside the scikit-image package (no pooch download), and the
captions are the project's own. With random crops at several zooms (see
`DataConfig.max_zoom`) they are a small but real training set for the tiny config.
The bytes are read as stored (PNG or JPEG), like records from `tip-prepare`.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

from tip_jax.errors import DataError

# (file in skimage/data, the `skimage.data` loader that reads it, captions)
PHOTOS = (
    ("astronaut.png", "astronaut", (
        "a smiling astronaut in an orange flight suit beside the American flag",
        "portrait of a woman astronaut holding her helmet, a space shuttle model behind her")),
    ("chelsea.png", "chelsea", (
        "close-up of a tabby cat with green eyes",
        "the face of a ginger striped cat looking to the side")),
    ("coffee.png", "coffee", (
        "a cup of espresso on a red saucer with a spoon, on a wooden table",
        "coffee in a red cup seen from above")),
    ("hubble_deep_field.jpg", "hubble_deep_field", (
        "thousands of distant galaxies on a black sky, Hubble deep field",
        "a deep space photograph full of colourful galaxies")),
    ("ihc.png", "immunohistochemistry", (
        "a microscope image of tissue stained brown and blue, immunohistochemistry",
        "stained glandular tissue under a microscope")),
    ("motorcycle_left.png", "stereo_motorcycle", (
        "a red motorcycle parked in a garage with shelves of boxes",
        "a classic red motorbike on a concrete floor")),
    ("retina.jpg", "retina", (
        "a fundus photograph of a human retina with red blood vessels",
        "the back of an eye, orange retina and optic disc")),
    ("rocket.jpg", "rocket", (
        "a rocket on the launch pad at dusk between lightning towers",
        "a white rocket standing on its launch pad under a blue evening sky")),
)


@functools.cache
def _records() -> tuple[dict[str, Any], ...]:
  data = importlib.resources.files("skimage") / "data"
  records = []
  for filename, name, captions in PHOTOS:
    path = data / filename
    if not path.is_file():
      raise DataError(f"demo: {filename} is not bundled with this scikit-image install "
                      f"(looked in {data}); use another data source")
    records.append({"image": path.read_bytes(), "captions": list(captions), "id": name,
                    "source": "skimage"})
  return tuple(records)


class DemoSource:
  """The bundled photographs as records; files are read once per process, on first use."""

  def __len__(self) -> int:
    return len(PHOTOS)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return _records()[index]

"""A demo source that needs no set-up: photographs bundled with installed packages.

These files ship inside scikit-image (its `data` folder, no pooch download) and, three
more colour photographs, inside scikit-learn (`load_sample_images`) and matplotlib
(`sample_data`); the captions are the project's own. They are split once, here, into
photos to train on (the shipped prior in `tip_jax/assets/` and the README's main
command) and photos held out for evaluation (`tip-make-benchmark --kind embedded`, the
estimator's tables), so that a score on the held-out photos is never a score on
training pixels. The stereo pair `motorcycle_left`/`motorcycle_right` shows one scene,
so both are on the training side. With random crops at several zooms (see
`DataConfig.max_zoom`) the training photos are a small but real training set; half of
scikit-image's are grey textures, which is why the others were added (README,
"Pretraining a backbone"). The bytes are read as stored (PNG or JPEG), like records
from `tip-prepare`, except that greyscale photos are re-encoded as RGB PNGs: every record
of this source is RGB, so none is counted as a mode conversion.

Splits: `train` (the 15 photos of the core dependencies: the shipped prior and
estimator were trained on them), `extra` (five more colour photographs that ship inside
gradio, installed with tip_jax's `demo` and `test` extras; the tiny TIP config adds
them, README "Set-up") and `heldout`. Sources: `demo` (= `demo:train`), `demo:SPLIT`,
and splits joined by `+`, e.g. `demo:train+extra`.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import pathlib
from typing import Any

from PIL import Image

from tip_jax.errors import DataError

SPLITS = ("train", "extra", "heldout")
# Packages outside the core dependencies, and the extra that installs each.
_EXTRAS = {"gradio": "demo"}

# (file, split, captions); file: a name in scikit-image's `data` folder, or
# "package:path" inside another installed package.
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
    ("sklearn:datasets/images/china.jpg", "train", (
        "a red and green Chinese pagoda on a wooded hill above a lake",
        "a tall traditional tower with curved roofs among trees, hazy water behind")),
    ("sklearn:datasets/images/flower.jpg", "train", (
        "an orange dahlia flower on dark green leaves",
        "close-up of a round peach-coloured dahlia in a garden")),
    ("matplotlib:mpl-data/sample_data/grace_hopper.jpg", "train", (
        "portrait of an elderly woman in a navy uniform and cap in front of the American flag",
        "an old woman officer with glasses and medals, a flag behind her")),
    ("gradio:media_assets/images/cheetah.jpg", "extra", (
        "a cheetah running fast across a plain, the ground blurred behind it",
        "a spotted big cat sprinting on brown grass")),
    ("gradio:media_assets/images/cheetah1.jpg", "extra", (
        "the face of a cheetah with amber eyes and black tear marks",
        "close-up portrait of a spotted wild cat looking at the camera")),
    ("gradio:test_data/cheetah2.jpg", "extra", (
        "a fluffy cheetah cub with big brown eyes on a white background",
        "a young spotted cat looking straight ahead")),
    ("gradio:media_assets/images/lion.jpg", "extra", (
        "a male lion with a dark mane lying on a rock, a lioness behind him",
        "a lion resting on a boulder and looking at the camera")),
    ("gradio:media_assets/images/tower.jpg", "extra", (
        "the Eiffel tower lit golden at dusk against a blue sky, branches above",
        "a tall iron tower glowing yellow in the evening")),
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
  """The PHOTOS rows of a split, or of splits joined by "+" (each once), in order."""
  names = split.split("+")
  if any(name not in SPLITS for name in names) or len(set(names)) != len(names):
    raise DataError(f"demo:{split}: expected one of {', '.join(SPLITS)}, or several "
                    "joined by '+' (e.g. train+extra)")
  return tuple(p for name in names for p in PHOTOS if p[1] == name)


@functools.cache
def _records(split: str) -> tuple[dict[str, Any], ...]:
  records = []
  for file, _, captions in photos(split):
    package, path = _location(file)
    if not path.is_file():
      raise DataError(f"demo: {file} is not bundled with this {package} install "
                      f"(looked for {path}); use another data source")
    records.append({"image": _rgb_bytes(path.read_bytes()), "captions": list(captions),
                    "id": path.name.rsplit(".", 1)[0], "source": package})
  return tuple(records)


def _location(file: str) -> tuple[str, pathlib.Path]:
  """(package, path) of a PHOTOS file, found without importing the package (importing
  matplotlib may build its font cache)."""
  package, _, path = file.rpartition(":")
  if not package:
    package, path = "skimage", f"data/{path}"
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    how = (f'pip install "tip_jax[{_EXTRAS[package]}]"' if package in _EXTRAS
           else "install tip_jax's dependencies")
    raise DataError(f"demo: {file} needs the {package} package, which is not "
                    f"installed; {how}, or use another data source")
  return package, pathlib.Path(spec.submodule_search_locations[0], *path.split("/"))


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

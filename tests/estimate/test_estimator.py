"""`Estimator`: crops of any image, decisions into the canonical prompt, JPEG files' own
quality, the folder format, and one clear line for every bad input."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.estimator import CROP, saved_tiny_estimator, tiny_estimator
from tip_jax.degrade import BLIND_PROMPT, prompts
from tip_jax.degrade.parameterized import TIPConfig
from tip_jax.errors import CheckpointError, ImageError
from tip_jax.estimate import DEFAULT_PATH, heads, load
from tip_jax.estimate.estimator import SPEC, WEIGHTS


def _photo(size=(70, 90), seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)


def _outputs(blind: float, present: list[float], strength: list[float]) -> np.ndarray:
  return np.array([blind, *present, *strength], np.float32)


def test_crops_cover_the_image_on_the_jpeg_grid_and_small_sides_are_padded():
  estimator, photo = tiny_estimator(), _photo((70, 200))
  crops = estimator.crops(photo)
  assert crops.shape == (16, CROP, CROP, 3) and crops.dtype == np.float32
  # A 4 x 4 grid spread over the image, each offset moved down onto a multiple of 8.
  offsets = [(y, x) for y in (0, 8, 24, 32) for x in (0, 56, 112, 168)]
  for crop, (y, x) in zip(crops, offsets):
    np.testing.assert_allclose(crop, photo[y:y + CROP, x:x + CROP] / 127.5 - 1, atol=1e-6)
  assert len(estimator.crops(_photo((CROP, CROP)))) == 1
  assert len(estimator.crops(_photo((CROP // 2 + 1, 40)))) == 2   # reflect-padded to CROP
  with pytest.raises(ImageError, match=rf"^40x{CROP // 2} pixels is too small to estimate "
                                       rf".*at least {CROP // 2 + 1} pixels a side"):
    estimator.crops(_photo((CROP // 2, 40)))


def test_grey_and_rgba_images_read_as_their_rgb():
  estimator, rgb = tiny_estimator(), _photo()
  grey = rgb[:, :, 0]
  np.testing.assert_array_equal(estimator.outputs(grey),
                                estimator.outputs(np.repeat(grey[:, :, None], 3, 2)))
  rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
  np.testing.assert_array_equal(estimator.outputs(rgba), estimator.outputs(rgb))


def test_decisions_write_the_canonical_prompt_within_the_training_ranges():
  estimator = tiny_estimator()
  found = estimator.decide(_outputs(-4, [3, -3, 2, 5], [0.5, 0.9, 1.7, -0.4]))
  assert not found.blind and found.blind_probability < 0.05
  low, high = TIPConfig().ranges["noise_sigma"]
  assert found.stages["noise_sigma"].value == high               # 1.7 clipped to the top
  assert found.stages["jpeg_quality"].value == TIPConfig().ranges["jpeg_quality"][0]
  text = found.prompt()
  assert text == "Deblur with sigma 0.8; Denoise with sigma 0.12; Dejpeg with quality 30;"
  assert prompts.canonical(text)[0] == text
  assert found.prompt(with_values=False) == "Deblur; Denoise; Dejpeg;"
  assert estimator.decide(_outputs(4, [3, 3, 3, 3], [0.5] * 4)).prompt() == BLIND_PROMPT
  assert estimator.decide(_outputs(-4, [-3] * 4, [0.5] * 4)).prompt() == ""
  row = found.to_json()
  assert row["prompt"] == text and set(row["stages"]) == set(heads.STAGES)
  assert row["stages"]["blur_sigma"] == {"present": True, "probability": 0.9526, "value": 0.8,
                                         "source": "estimate", "exact": True}
  json.dumps(row)


def _jpeg(path, quality: int) -> str:
  Image.fromarray(_photo()).save(path, format="JPEG", quality=quality)
  return str(path)


def test_a_jpeg_files_quality_comes_from_the_file(tmp_path):
  estimator = tiny_estimator()
  for quality in (20, 55, 90):
    stage = estimator.estimate_file(_jpeg(tmp_path / f"q{quality}.jpg", quality)
                                    ).stages["jpeg_quality"]
    assert (stage.present, stage.value, stage.source, stage.exact) == (True, quality, "file",
                                                                       True)
  top = estimator.estimate_file(_jpeg(tmp_path / "q98.jpg", 98)).stages["jpeg_quality"]
  assert not top.present and top.value == 98     # above the training range: nothing to undo
  Image.fromarray(_photo()).save(tmp_path / "p.png")
  png = estimator.estimate_file(str(tmp_path / "p.png"))
  assert png.stages["jpeg_quality"].source == "estimate"
  assert png == estimator.estimate(_photo())


def test_bad_files_are_one_line_naming_them(tmp_path):
  estimator = tiny_estimator()
  whole = io.BytesIO()
  Image.fromarray(_photo()).save(whole, format="PNG")
  (tmp_path / "cut.png").write_bytes(whole.getvalue()[:200])
  with pytest.raises(ImageError, match=r"cut.png: not a readable image"):
    estimator.estimate_file(str(tmp_path / "cut.png"))
  Image.fromarray(_photo((8, 8))).save(tmp_path / "tiny.png")
  with pytest.raises(ImageError, match=r"tiny.png: 8x8 pixels is too small"):
    estimator.estimate_file(str(tmp_path / "tiny.png"))
  with pytest.raises(ImageError, match=r"nope.png: no such file"):
    estimator.estimate_file(str(tmp_path / "nope.png"))


def test_a_saved_estimator_loads_back_the_same_and_broken_folders_name_the_file(tmp_path):
  folder = saved_tiny_estimator(tmp_path / "est")
  loaded = load(folder)
  np.testing.assert_array_equal(loaded.outputs(_photo()), tiny_estimator().outputs(_photo()))
  assert loaded.spec == tiny_estimator().spec and loaded.source == folder
  with pytest.raises(CheckpointError, match=rf"^{tmp_path}/none/{SPEC}: no such file"):
    load(str(tmp_path / "none"))
  (tmp_path / "est" / WEIGHTS).write_bytes(b"not safetensors")
  with pytest.raises(CheckpointError, match=rf"{WEIGHTS}: not a readable safetensors file"):
    load(folder)
  spec = json.loads((tmp_path / "est" / SPEC).read_text())
  spec["network"]["head"] = 16
  saved_tiny_estimator(tmp_path / "est")
  (tmp_path / "est" / SPEC).write_text(json.dumps(spec))
  with pytest.raises(CheckpointError, match="does not match the network"):
    load(folder)


def test_the_shipped_estimator_serves_the_ranges_tip_trains_on():
  shipped = load()
  assert shipped.source == DEFAULT_PATH
  assert shipped.spec.ranges == TIPConfig().ranges
  assert set(shipped.spec.thresholds) == {"blind", *heads.STAGES}

"""CLIP-I / CLIP-T against transformers: preprocessing, embeddings and cosines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tip_jax.convert.clip import load_clip
from tip_jax.metrics import clip as clip_metrics

torch = pytest.importorskip("torch")
from tests.fixtures import clip as clip_fixture  # noqa: E402  (imports torch)

# Landscape, portrait, square, downscaled and upscaled, already 224, odd sizes.
SHAPES = [(300, 400), (400, 300), (256, 256), (180, 500), (224, 224), (97, 131)]
CAPTIONS = ["a photo of a cat", "a zebra on the grass", "an old red bus", "snowy mountains",
            "a bowl of fruit", "two dogs running along the beach at sunset, film grain"]


def _images_uint8(seed: int) -> list[np.ndarray]:
  """Smooth patterns plus noise, so that the resampling filter matters."""
  rng = np.random.default_rng(seed)
  out = []
  for h, w in SHAPES:
    y, x = np.mgrid[:h, :w]
    base = 127 + 100 * np.sin(x[..., None] / 7.0 + np.arange(3)) * np.cos(y[..., None] / 11.0)
    out.append(np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8))
  return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(transformers module, torch CLIPModel, our scorer loaded from its saved folder)."""
  model = clip_fixture.torch_clip()
  folder = clip_fixture.save_clip(model, tmp_path_factory.mktemp("clip"))
  return clip_fixture.transformers(), model, load_clip(str(folder))


def _torch_image_embeds(tf, model, images_uint8) -> np.ndarray:
  pixels = tf.CLIPImageProcessorPil()(images=images_uint8, return_tensors="pt")["pixel_values"]
  with torch.no_grad():
    out = model.get_image_features(pixel_values=pixels)
  features = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
  return (features / features.norm(dim=-1, keepdim=True)).numpy()


def _torch_text_embeds(tf, model, scorer, captions) -> np.ndarray:
  ids = scorer.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt")["input_ids"]
  with torch.no_grad():
    out = model.get_text_features(input_ids=ids)
  features = getattr(out, "pooler_output", out)
  return (features / features.norm(dim=-1, keepdim=True)).numpy()


def test_resize_and_crop_is_the_pil_processors(setup):
  """Host part: the same uint8 pixels as CLIPImageProcessorPil, bit for bit."""
  tf = setup[0]
  images = _images_uint8(0)
  ours = clip_metrics.resize_and_crop([im / 255.0 for im in images], 224)
  ref = tf.CLIPImageProcessorPil(do_rescale=False, do_normalize=False)(
      images=images, return_tensors="np")["pixel_values"]
  assert ours.dtype == np.uint8 and ours.shape == (len(SHAPES), 224, 224, 3)
  np.testing.assert_array_equal(ours, ref.transpose(0, 2, 3, 1))


def test_preprocessing_matches_processors(setup):
  tf = setup[0]
  images = _images_uint8(0)
  ours = np.asarray(jax.jit(clip_metrics.normalize)(
      jnp.asarray(clip_metrics.resize_and_crop([im / 255.0 for im in images], 224))))
  pil = tf.CLIPImageProcessorPil()(images=images, return_tensors="np")["pixel_values"]
  # XLA turns the divisions by constants into multiplications by their reciprocals: one
  # float32 rounding apart. Measured: 4.8e-7.
  assert np.abs(ours - pil.transpose(0, 2, 3, 1)).max() <= 1e-6
  # transformers 5's default CLIPImageProcessor resizes with torchvision's antialiased
  # bicubic instead of PIL. Measured against it: max 0.028 (two uint8 levels, on a few
  # pixels: 0.4% of values), mean 5.7e-5.
  default = tf.CLIPImageProcessor()(images=images, return_tensors="np")["pixel_values"]
  diff = np.abs(ours - default.transpose(0, 2, 3, 1))
  assert diff.max() <= 3 / 255 / min(clip_metrics.STD) and diff.mean() <= 1e-3


def test_image_embeds_parity(setup):
  tf, model, scorer = setup
  images = _images_uint8(1)
  got = np.asarray(scorer.image_embeds([im / 255.0 for im in images]))
  expected = _torch_image_embeds(tf, model, images)
  assert got.shape == (len(SHAPES), clip_fixture.PROJECTION_DIM)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-6)
  # Measured: 1.9e-7.
  assert np.abs(got - expected).max() <= 1e-4


def test_text_embeds_parity(setup):
  tf, model, scorer = setup
  got = np.asarray(scorer.text_embeds(CAPTIONS))
  # Measured: 2.4e-7.
  assert np.abs(got - _torch_text_embeds(tf, model, scorer, CAPTIONS)).max() <= 1e-4


def test_clip_i_and_clip_t_are_raw_cosines(setup):
  tf, model, scorer = setup
  pred, ref = _images_uint8(2), _images_uint8(3)
  pred_embeds = _torch_image_embeds(tf, model, pred)
  ref_embeds = _torch_image_embeds(tf, model, ref)
  text_embeds = _torch_text_embeds(tf, model, scorer, CAPTIONS)
  clip_i = np.asarray(scorer.clip_i([im / 255.0 for im in pred], [im / 255.0 for im in ref]))
  clip_t = np.asarray(scorer.clip_t([im / 255.0 for im in pred], CAPTIONS))
  assert clip_i.shape == clip_t.shape == (len(SHAPES),)
  # Measured: 2.4e-7 (CLIP-I and CLIP-T); some CLIP-T values are negative
  # (random weights), which the raw cosine keeps.
  np.testing.assert_allclose(clip_i, np.sum(pred_embeds * ref_embeds, -1), atol=1e-5)
  np.testing.assert_allclose(clip_t, np.sum(pred_embeds * text_embeds, -1), atol=1e-5)
  assert (clip_t < 0).any()


def test_batched_array_input(setup):
  """An (B, H, W, 3) float array scores like the list of its images; self-similarity is 1."""
  scorer = setup[2]
  batch = np.stack([_images_uint8(4)[0], _images_uint8(5)[0]]) / 255.0
  np.testing.assert_allclose(scorer.clip_i(batch, list(batch)), 1.0, atol=1e-6)
  with pytest.raises(ValueError, match="2 images but 1 captions"):
    scorer.clip_t(batch, CAPTIONS[:1])
  with pytest.raises(ValueError, match=r"RGB images of shape \(H, W, 3\)"):
    scorer.image_embeds(batch[..., :1])

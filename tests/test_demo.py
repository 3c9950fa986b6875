"""tip_jax.demo without a server: the prompt the stage controls build, the upload limits,
and the page's queueing (restorations one at a time; prompt edits never wait)."""

import copy

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.estimator import tiny_estimator
from tests.fixtures.restore import tiny_restorer
from tip_jax import demo
from tip_jax.degrade import BLIND_PROMPT, prompts
from tip_jax.errors import ImageError


def test_controls_build_the_training_form_of_the_prompt():
  assert demo.controls_prompt(False, 1.6, False, 2.5, False, 0.07, False, 62) == BLIND_PROMPT
  text = demo.controls_prompt(True, 1.6, False, 2.5, True, 0.07, True, 62)
  assert text == "Deblur with sigma 1.6; Denoise with sigma 0.07; Dejpeg with quality 62;"
  assert prompts.canonical(text)[0] == text
  every = demo.controls_prompt(True, 3.25, True, 4, True, 0.123, True, 40.4)
  assert prompts.parse(every) == prompts.Stages(blur_sigma=3.2, downsample=4.0,
                                                noise_sigma=0.12, jpeg_quality=40.0)


def test_uploads_beyond_the_side_limit_are_refused_before_decoding(tmp_path):
  path = str(tmp_path / "wide.png")
  Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(path)
  limits = demo.Limits(max_side=40)
  assert demo.read_upload(path, None, limits).shape == (20, 40, 3)
  with pytest.raises(ImageError, match=r"^the image is 40x20 upsampled by 2: at most 40 "):
    demo.read_upload(path, 2.0, limits)
  whole = open(path, "rb").read()
  (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
  with pytest.raises(ImageError, match=r"^the image is 40x20: at most 20 pixels a side"):
    demo.read_upload(str(tmp_path / "cut.png"), None, demo.Limits(max_side=20))
  with pytest.raises(ImageError, match="not a readable image"):
    demo.read_upload(str(tmp_path / "cut.png"), None, limits)


def test_before_after_pairs_the_input_at_the_restorations_size():
  image = np.zeros((10, 20, 3), np.uint8)
  before, after = demo.before_after(image, np.ones((30, 60, 3), np.uint8))
  assert before.shape == after.shape == (30, 60, 3)
  assert demo.before_after(image, image)[0] is image


def test_restorations_queue_one_at_a_time_and_prompt_edits_do_not_wait():
  options = dict(semantic_prompt="", steps=5, guidance=4.0, seed=0, sampler="ddim")
  page = demo.build(tiny_restorer(), demo.Limits(), options)
  events = {fn.name: fn for fn in page.fns.values()}
  assert events["restore"].queue and events["restore"].concurrency_limit == 1
  assert not events["controls_prompt"].queue


def test_estimate_fills_the_restoration_prompt_and_restores_at_the_photos_size(tmp_path):
  restorer = copy.copy(tiny_restorer())
  restorer.estimator = tiny_estimator()
  options = dict(semantic_prompt="", steps=5, guidance=4.0, seed=0)
  events = {fn.name: fn for fn in demo.build(restorer, demo.Limits(max_side=48),
                                               options).fns.values()}
  path = str(tmp_path / "in.jpg")
  pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path, quality=50)
  prompt, status, resize = events["estimate"].fn(path)
  found = tiny_estimator().estimate_file(path)
  assert prompt == found.prompt() and resize is False
  assert status.startswith("Estimated (probabilities): Real-ESRGAN mix ")
  assert "Dejpeg: quality 50 read from the JPEG file" in status
  assert status == demo.describe(found)
  Image.fromarray(np.zeros((60, 60, 3), np.uint8)).save(tmp_path / "big.png")
  with pytest.raises(gr.Error, match="the image is 60x60: at most 48 pixels a side"):
    events["estimate"].fn(str(tmp_path / "big.png"))

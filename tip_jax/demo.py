"""The web demo's page (gradio) around one `TIPRestorer`: what `tip-demo` serves.

    page = build(restorer, Limits(max_upload_mb=10, max_side=1024), options)
    page.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1")

A person uploads a photo, gives a semantic prompt and a restoration prompt (typed,
built from the four stage controls: the text follows them as they move, in the
training form of `prompts.Stages.prompt`, or estimated from the photo by the
degradation estimator, with each stage's probability shown, to edit before restoring),
and gets the input and the restoration in one before/after slider. The upload is
checked against the limits from its file header before it is decoded, so an oversized
image costs no memory; every refusal is one line in the page. Requests share one
restorer and its device(s): the caller queues them one at a time.
"""

from __future__ import annotations

import dataclasses
import time

import gradio as gr
import jax
import numpy as np
from PIL import Image

from tip_jax.degrade import BLIND_PROMPT, prompts
from tip_jax.errors import ImageError, TipError
from tip_jax.estimate import Estimate
from tip_jax.image_io import image_size, read_rgb
from tip_jax.restore import TIPRestorer


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may ask of the server."""

  max_upload_mb: float = 10.0   # the uploaded file, in MiB
  max_side: int = 1024          # the longer side to restore, after any "Upsample to Fx"


def controls_prompt(deblur_on: bool, deblur: float, upsample_on: bool, upsample: float,
                    denoise_on: bool, denoise: float, dejpeg_on: bool, dejpeg: float) -> str:
  """The restoration prompt the stage controls describe (the blind prompt when none is
  on): each enabled stage with its strength, in the pipeline's order and precision."""
  stages = prompts.Stages(blur_sigma=deblur if deblur_on else None,
                          downsample=upsample if upsample_on else None,
                          noise_sigma=denoise if denoise_on else None,
                          jpeg_quality=dejpeg if dejpeg_on else None)
  return stages.prompt() or BLIND_PROMPT


def read_upload(path: str, factor: float | None, limits: Limits) -> np.ndarray:
  """The uploaded image as uint8 RGB; raises ImageError when its longer side, times the
  prompt's upsampling factor, exceeds `limits.max_side` (checked before decoding)."""
  width, height = image_size(path)
  side = round(max(width, height) * (factor or 1.0))
  if side > limits.max_side:
    scaled = f" upsampled by {factor:g}" if factor else ""
    raise ImageError(f"the image is {width}x{height}{scaled}: at most {limits.max_side} "
                     "pixels a side are restored here (use a smaller image, or start "
                     "tip-demo with a larger --max_side)")
  return read_rgb(path)


def describe(estimate: Estimate) -> str:
  """One line: the probability behind each part of an estimated prompt, and where each
  strength came from."""
  parts = [f"Real-ESRGAN mix {estimate.blind_probability:.2f}"]
  for clause in prompts.CLAUSES:
    stage = estimate.stages[clause.field]
    if stage.source == "file":
      parts.append(f"{clause.verb}: quality {stage.value:g} read from the JPEG file")
    else:
      parts.append(f"{clause.verb} {stage.probability:.2f}"
                   + (f" ({clause.link} {stage.value:g})" if stage.present else ""))
  return "Estimated (probabilities): " + "; ".join(parts) + ". Edit the prompt if you disagree."


def before_after(image: np.ndarray, restored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The input brought to the restoration's size (bicubic; an "Upsample to" prompt makes
  it larger), so the slider compares the two pixel for pixel."""
  size = restored.shape[1::-1]
  if image.shape[1::-1] != size:
    image = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
  return image, restored


def _stage_controls(restorer: TIPRestorer) -> list[gr.components.Component]:
  """(on/off, strength) for each clause, sliders spanning the physical values around the
  range the checkpoint was trained on (named in each slider's label)."""
  tip = restorer.degrade_config.tip
  defaults = tip.defaults
  spans = {"blur_sigma": (0.1, 2 * tip.blur_sigma[1], 0.1),
           "downsample": (1.0, 2 * tip.downsample[1], 0.1),
           "noise_sigma": (0.0, 2 * tip.noise_sigma[1], 0.01),
           "jpeg_quality": (1.0, 100.0, 1.0)}
  controls = []
  for clause in prompts.CLAUSES:
    low, high = tip.ranges[clause.field]
    lowest, highest, step = spans[clause.field]
    with gr.Row(equal_height=True):
      controls.append(gr.Checkbox(False, label=clause.verb, scale=1, min_width=90))
      controls.append(gr.Slider(lowest, highest, value=defaults[clause.field], step=step,
                                label=f"{clause.verb} {clause.link} (trained on {low:g}-"
                                f"{high:g})", scale=4))
  return controls


def build(restorer: TIPRestorer, limits: Limits, options: dict) -> gr.Blocks:
  """The page. `options` are `TIPRestorer.restore`'s keyword arguments (the CLI's
  sampling flags): semantic_prompt, steps, guidance and seed are the controls' first
  values, the rest (sampler, tiling, colour fix, ...) apply to every request."""
  fixed = {k: v for k, v in options.items()
           if k not in ("semantic_prompt", "steps", "guidance", "seed")}
  devices = jax.devices()
  where = f"{len(devices)} x {devices[0].device_kind}"

  def restore(path, semantic, restoration, resize, steps, guidance, seed,
              progress=gr.Progress()):
    if not path:
      raise gr.Error("Upload an image first.")
    try:
      factor = restorer.upsample_factor(restoration) if resize else None
      image = read_upload(path, factor, limits)
    except TipError as e:
      raise gr.Error(str(e)) from None
    started = time.perf_counter()
    # The whole sampling loop is one compiled program, so there are no per-step updates:
    # the page shows this line, the elapsed time and, after a first request, its estimate.
    progress(None, desc=f"sampling {int(steps)} steps (a new image size compiles first)")
    restored = restorer.restore(image, semantic, restoration, steps=int(steps),
                                guidance=float(guidance), seed=int(seed),
                                upsample=bool(resize), **fixed)
    seconds = time.perf_counter() - started
    given = restorer.restoration_conditioning(restoration)[0]
    status = (f"Restored {image.shape[1]}x{image.shape[0]} -> "
              f"{restored.shape[1]}x{restored.shape[0]} in {seconds:.1f} s on {where}. "
              f"The model was given c_s = \"{restorer.semantic_conditioning(semantic)}\", "
              f"c_r = \"{given}\".")
    return before_after(image, restored), status

  def estimate(path):
    if not path:
      raise gr.Error("Upload an image first.")
    try:
      read_upload(path, None, limits)
      found = restorer.estimator.estimate_file(path)
    except TipError as e:
      raise gr.Error(str(e)) from None
    return restorer.prompt_for(found), describe(found), False

  with gr.Blocks(title="tip-demo", analytics_enabled=False,
                 delete_cache=(600, 3600)) as page:
    gr.Markdown("# TIP: text-driven image restoration\n"
                "Upload a photo, say what it shows (semantic prompt) and what to undo "
                "(restoration prompt: type it, switch on the stages below, or let "
                "**Estimate** write it), then "
                f"**Restore**. Running on {where}; one request at a time, the others "
                f"wait in line. Uploads: at most {limits.max_upload_mb:g} MiB and "
                f"{limits.max_side} pixels a side.")
    with gr.Row():
      with gr.Column():
        image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                         label="input")
        semantic = gr.Textbox(options["semantic_prompt"], label="semantic prompt c_s",
                              placeholder="what the photo shows, e.g. a red motorcycle "
                              "(empty: none)")
        with gr.Group():
          controls = _stage_controls(restorer)
          restoration = gr.Textbox(BLIND_PROMPT, label="restoration prompt c_r (typed, "
                                   "built from the stages above, or estimated)")
          estimate_button = gr.Button("Estimate the restoration prompt from the photo",
                                      size="sm")
          # An estimated "Upsample to Fx" says the photo already is a small image brought
          # up F times: Estimate unticks this, so it is restored at its own size.
          resize = gr.Checkbox(True, label="resize the input by the prompt's Upsample "
                               "factor (unticked: it already is at its final size)")
        with gr.Row():
          steps = gr.Slider(1, max(200, options["steps"]), value=options["steps"], step=1,
                            label="steps")
          guidance = gr.Slider(1.0, 15.0, value=options["guidance"], step=0.5,
                               label="guidance")
          seed = gr.Number(options["seed"], precision=0, label="seed")
        button = gr.Button("Restore", variant="primary")
      with gr.Column():
        result = gr.ImageSlider(type="numpy", format="png", label="before | after",
                                interactive=False)
        status = gr.Markdown()
    gr.on([c.change for c in controls], controls_prompt, controls, restoration,
          queue=False, show_progress="hidden")
    button.click(restore, [image, semantic, restoration, resize, steps, guidance, seed],
                 [result, status], concurrency_limit=1)
    estimate_button.click(estimate, [image], [restoration, status, resize],
                          concurrency_limit=1)
  return page

"""Stored image bytes -> a square uint8 RGB crop, surviving whatever a web crawl holds.

Bad files are an expected part of large image-text sets, so every way a file can fail
becomes one exception, `BadData`, whose `reason` (a stat name) says why the record is
skipped; `crop` reports the fixes it made (mode conversions, upscaling, draft-decoding
of huge files) as events. The pipeline counts both so that they reach the trainer's
metrics.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Events, in the order the pipeline reports them.
SKIPPED_CORRUPT = "skipped_corrupt"        # truncated or undecodable data, unreadable record
SKIPPED_NOT_IMAGE = "skipped_not_image"    # bytes of no image format PIL knows
SKIPPED_HUGE = "skipped_huge"              # over the pixel cap with no reduced decode
CONVERTED_MODE = "converted_mode"          # CMYK, 16-bit, grayscale, palette, alpha -> RGB
UPSCALED = "upscaled"                      # short side below the crop
DOWNSCALED_HUGE = "downscaled_huge"        # over the pixel cap, JPEG decoded at 1/2..1/8
EVENTS = (SKIPPED_CORRUPT, SKIPPED_NOT_IMAGE, SKIPPED_HUGE, CONVERTED_MODE, UPSCALED,
          DOWNSCALED_HUGE)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_WITH_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


class BadData(Exception):
  """An example the pipeline skips; `reason` is one of the SKIPPED_* event names."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason


def _to_rgb(im: Image.Image) -> Image.Image:
  """Any PIL mode -> "RGB"; transparent areas over white, 16-bit scaled, not clipped."""
  if im.mode in _SIXTEEN_BIT:
    # PIL's own I;16 -> L conversion clips at 255 instead of scaling.
    levels = np.asarray(im, np.float32) * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8)).convert("RGB")
  if im.mode in _WITH_ALPHA or (im.mode == "P" and "transparency" in im.info):
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
  return im.convert("RGB")


def _open(data: bytes) -> Image.Image:
  """Reads the header only (PIL decodes lazily), mapping failures to `BadData`."""
  try:
    im = Image.open(io.BytesIO(data))
  except UnidentifiedImageError as e:
    raise BadData(SKIPPED_NOT_IMAGE, str(e)) from None
  except Image.DecompressionBombError as e:
    raise BadData(SKIPPED_HUGE, str(e)) from None
  except Exception as e:  # noqa: BLE001  (a malformed header can raise anything)
    raise BadData(SKIPPED_CORRUPT, f"{type(e).__name__}: {e}") from None
  if min(im.size) < 1:
    raise BadData(SKIPPED_CORRUPT, f"empty image {im.width}x{im.height}")
  return im


def _load(im: Image.Image, scale: float, max_pixels: int) -> tuple[Image.Image, set[str]]:
  """Decodes to RGB; a JPEG at the smallest draft scale (1/2..1/8) still >= `scale`."""
  events = set()
  w, h = im.size
  if scale < 1:
    im.draft(im.mode, (math.ceil(w * scale), math.ceil(h * scale)))  # no-op unless JPEG
  if im.width * im.height > max_pixels:
    raise BadData(SKIPPED_HUGE, f"{w}x{h} is over the {max_pixels}-pixel cap")
  if w * h > max_pixels:
    events.add(DOWNSCALED_HUGE)
  try:
    ImageOps.exif_transpose(im, in_place=True)   # loads; camera photos stored rotated
    if im.mode != "RGB":
      events.add(CONVERTED_MODE)
      im = _to_rgb(im)
  except Exception as e:  # noqa: BLE001  (decoders raise OSError, SyntaxError, struct.error, ...)
    raise BadData(SKIPPED_CORRUPT, f"{type(e).__name__}: {e}") from None
  return im, events


def crop(data: bytes, resolution: int, uniforms: np.ndarray, *, max_zoom: float = 1.0,
         max_pixels: int = 8192 * 8192, exact: bool = False) -> tuple[np.ndarray, set[str]]:
  """Encoded image -> ((resolution, resolution, 3) uint8, events); raises `BadData`.

  The short side is scaled to a length drawn in [resolution, max_zoom * resolution]
  (never beyond the image's own short side unless that is below `resolution`), and a
  random square is cut from it, in one resampling of the source box. `uniforms` holds
  three U[0, 1) draws (zoom, x, y), so the caller's RNG fixes the crop; (0, 0.5, 0.5)
  with max_zoom=1 is "short side to `resolution`, centre crop".

  The resampling is PIL's bicubic, antialiased (its support widens with the reduction).
  For speed a large JPEG is decoded at 1/2..1/8 scale when that still covers the crop,
  and reductions beyond 3x start with a box reduce (`reducing_gap`); `exact` skips both,
  so the crop is one plain bicubic resampling of the fully decoded image (test sets).
  """
  zoom, ux, uy = uniforms
  im = _open(data)
  short = min(im.size)
  target = max(resolution, min(resolution * (1.0 + (max_zoom - 1.0) * zoom), short))
  im, events = _load(im, 1.0 if exact else target / short, max_pixels)
  if short < resolution:
    events.add(UPSCALED)
  side = min(im.size) * resolution / target   # the crop's side in decoded pixels
  left, top = ux * (im.width - side), uy * (im.height - side)
  out = im.resize((resolution, resolution), Image.BICUBIC,
                  box=(left, top, left + side, top + side),
                  reducing_gap=None if exact else 3.0)
  return np.asarray(out, np.uint8), events

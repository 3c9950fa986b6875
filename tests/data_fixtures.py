"""Test helpers for tip_jax.data: small generated images, bad files, record shards."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tip_jax.data import sources


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
  """A smooth uint8 RGB image that differs per seed (so crops and flips are visible)."""
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  phase = seed * 0.7
  rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(9 * xx + phase) * np.cos(6 * yy - phase)], -1)
  return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def encode(array_or_image, fmt: str, **kw) -> bytes:
  im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(
      array_or_image)
  buf = io.BytesIO()
  im.save(buf, fmt, **kw)
  return buf.getvalue()


def bomb_png(side: int = 20000) -> bytes:
  """A PNG header claiming side x side pixels (PIL refuses it at open: a decompression bomb)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) +
          chunk(b"IEND", b""))


def bad_files() -> list[tuple[str, bytes, str | None]]:
  """(name, stored bytes, the event it must cause) for a 16-pixel crop and a 10,000-pixel cap.

  The last file is good, so with shuffle off every skip is carried within one epoch.
  """
  good = photo(30, 40, 1)
  gray16 = Image.fromarray(np.full((20, 20), 32896, np.uint16))       # 32896 / 257 = 128
  rgba = np.dstack([photo(20, 20, 2), np.zeros((20, 20), np.uint8)])  # fully transparent
  palette = Image.fromarray(photo(20, 24, 3)).convert("P", palette=Image.Palette.ADAPTIVE)
  cmyk = Image.fromarray(photo(20, 20, 4)).convert("CMYK")
  return [
      ("good.jpg", encode(good, "JPEG", quality=90), None),
      ("good.png", encode(photo(24, 24, 5), "PNG"), None),
      ("good.webp", encode(photo(32, 32, 6), "WEBP"), None),
      ("cmyk.jpg", encode(cmyk, "JPEG"), "converted_mode"),
      ("gray16.png", encode(gray16, "PNG"), "converted_mode"),
      ("gray.png", encode(photo(20, 20, 7)[..., 0], "PNG"), "converted_mode"),
      ("palette.png", encode(palette, "PNG"), "converted_mode"),
      ("rgba.png", encode(rgba, "PNG"), "converted_mode"),
      ("tiny.png", encode(photo(6, 8, 8), "PNG"), "upscaled"),
      ("huge.jpg", encode(photo(150, 200, 9), "JPEG"), "downscaled_huge"),
      ("huge.png", encode(photo(150, 200, 10), "PNG"), "skipped_huge"),
      ("bomb.png", bomb_png(), "skipped_huge"),
      ("truncated.jpg", encode(photo(60, 80, 11), "JPEG")[:400], "skipped_corrupt"),
      ("notes.txt", b"this is not an image\n" * 20, "skipped_not_image"),
      ("garbage-record", b"", "skipped_corrupt"),          # not even a record
      ("last.jpg", encode(photo(40, 30, 12), "JPEG"), None),
  ]


def write_shard(path, files, captions_per_record: int = 2) -> None:
  """One ArrayRecord shard; a file named "garbage-record" is stored as raw bytes, not a record."""
  with sources.ShardWriter(str(path)) as shard:
    for i, (name, data, _) in enumerate(files):
      caps = [f"{name} caption {j}" for j in range(captions_per_record)]
      shard.write(b"\xc1junk" if name == "garbage-record"
                  else sources.encode_record(data, caps, f"id{i}", "test"))

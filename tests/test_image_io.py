"""image_io: one-line read errors, PNG writes that are atomic and get the user's umask."""

import os
import stat

import numpy as np
import pytest

from tip_jax.errors import ImageError
from tip_jax.image_io import image_size, read_rgb, write_png


def test_written_png_gets_the_umask_and_reads_back(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
  old = os.umask(0o027)
  try:
    write_png(image, str(tmp_path / "a.png"))
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / "a.png").st_mode) == 0o640   # not mkstemp's 0600
  np.testing.assert_array_equal(read_rgb(str(tmp_path / "a.png")), image)
  assert os.listdir(tmp_path) == ["a.png"]                            # no temporary left


def test_read_errors_name_the_file(tmp_path):
  (tmp_path / "bad.png").write_text("not a png")
  for path, message in ((tmp_path / "bad.png", "not a readable image"),
                        (tmp_path / "none.png", "no such file"), (tmp_path, "is a folder")):
    for read in (read_rgb, image_size):
      with pytest.raises(ImageError, match=message):
        read(str(path))


def test_image_size_reads_the_header_only(tmp_path):
  """A truncated file still has its size (the header is intact); decoding it fails."""
  image = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
  write_png(image, str(tmp_path / "a.png"))
  whole = (tmp_path / "a.png").read_bytes()
  (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
  assert image_size(str(tmp_path / "cut.png")) == (50, 30)
  with pytest.raises(ImageError, match="not a readable image"):
    read_rgb(str(tmp_path / "cut.png"))

"""`tip-degrade`: a labelled grid for good input, one clear line and exit 1 for bad input."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "tip_jax.cli.degrade", *args],
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
  yy, xx = np.mgrid[0:80, 0:120] / 80.0
  rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(10 * xx) * np.cos(7 * yy)], -1)
  path = tmp_path_factory.mktemp("img") / "photo.png"
  Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path)
  return path


def test_sampled_grid_and_given_prompt(photo, tmp_path):
  out = tmp_path / "grid.png"
  done = _run(str(photo), "--n", "3", "--size", "64", "--out", str(out))
  assert done.returncode == 0, done.stderr
  grid = Image.open(out)
  assert grid.width == 4 * 64 and grid.height > 64      # 4 tiles, labels underneath
  again = _run(str(photo), "--n", "2", "--size", "64", "--out", str(out), "--overwrite",
               "--prompt", "deblur with sigma 2; dejpeg with quality 40")
  assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("args,message", [
    (["missing.png"], "missing.png: no such file"),
    (["--prompt", "Sharpen with sigma 2", "PHOTO"], "unknown clause 'Sharpen with sigma 2'"),
    (["--prompt", "Deblur with sigma 40", "PHOTO"], "clause 'Deblur with sigma 40'"),
    (["NOT_AN_IMAGE"], "not a readable image"),
    (["EXISTING"], "exists; pass --overwrite"),
])
def test_bad_input_gives_one_line_and_exit_1(photo, tmp_path, args, message):
  fake = tmp_path / "fake.png"
  fake.write_text("not a png")
  existing = tmp_path / "existing.png"
  existing.write_bytes(b"keep me")
  out = existing if "EXISTING" in args else tmp_path / "out.png"
  swap = {"PHOTO": str(photo), "NOT_AN_IMAGE": str(fake), "EXISTING": str(photo),
          "missing.png": str(tmp_path / "missing.png")}
  done = _run(*[swap.get(a, a) for a in args], "--out", str(out), "--size", "32")
  assert done.returncode == 1
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], done.stderr
  assert "Traceback" not in done.stderr
  assert existing.read_bytes() == b"keep me"

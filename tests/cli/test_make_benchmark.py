"""`tip-make-benchmark`: sets written and kept on a rerun, a skipped file named, one clear
line and exit 1 for bad input."""

import subprocess
import sys

import pytest
from tests.fixtures.data import encode, photo, write_coco_captions


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "tip_jax.cli.make_benchmark", *args],
                        capture_output=True, text=True, timeout=300)


@pytest.fixture
def coco(tmp_path):
  folder = tmp_path / "val2017"
  folder.mkdir()
  (folder / "a.jpg").write_bytes(encode(photo(70, 90, 0), "JPEG"))
  (folder / "b.png").write_bytes(encode(photo(80, 64, 1), "PNG"))
  (folder / "broken.jpg").write_bytes(encode(photo(80, 90, 2), "JPEG")[:300])
  captions = tmp_path / "captions_val2017.json"
  names = ["a.jpg", "b.png", "broken.jpg"]    # seed 0 draws the third first
  write_coco_captions(captions, names, {n: [f"{n} caption"] for n in names})
  return folder, captions


def test_coco_sets_skip_a_corrupt_image_and_rerun_keeps_them(coco, tmp_path):
  folder, captions = coco
  args = ["--kind", "coco", "--images", str(folder), "--captions", str(captions), "--out",
          str(tmp_path / "sets"), "--count", "2", "--size", "64"]
  done = _run(*args)
  assert done.returncode == 0, done.stderr
  lines = done.stdout.strip().splitlines()
  assert len(lines) == 2 and all(line.startswith("tip-make-benchmark: wrote ") for line in lines)
  assert "coco_param_64: 2 examples at 64^2" in lines[0] and "skipped 1: broken.jpg" in lines[0]
  assert "broken.jpg: skipped (corrupt or truncated)" in done.stderr     # the warning
  again = _run(*args)
  assert again.returncode == 0, again.stderr
  assert again.stdout.count("already built, kept") == 2
  other = _run(*args[:-4], "--count", "1", "--size", "64")
  assert other.returncode == 1
  assert other.stderr.strip().splitlines() == [
      f"tip-make-benchmark: {tmp_path / 'sets' / 'coco_param_64'} was built with other "
      "arguments: count 2 (now 1); use another --out or delete it"]


@pytest.mark.parametrize("case,message", [
    ("no_kind", "--kind is required"),
    ("no_folder", "no such image folder"),
    ("bad_json", "cannot read the annotations"),
    ("all_broken", "only 0 usable images of 3 listed, 2 asked for"),
    ("embedded_with_images", "--kind=embedded reads the photos bundled with scikit-image"),
])
def test_bad_input_is_one_line_and_exit_1(coco, tmp_path, case, message):
  folder, captions = coco
  if case == "bad_json":
    captions.write_text("{")
  if case == "all_broken":
    for name in ("a.jpg", "b.png"):
      (folder / name).write_bytes(b"not an image")
  args = {"no_kind": ["--images", str(folder)],
          "no_folder": ["--kind", "coco", "--images", str(tmp_path / "nope"), "--captions",
                        str(captions)],
          "embedded_with_images": ["--kind", "embedded", "--images", str(folder)],
          }.get(case, ["--kind", "coco", "--images", str(folder), "--captions", str(captions)])
  done = _run(*args, "--out", str(tmp_path / "sets"), "--count", "2", "--size", "64")
  assert done.returncode == 1
  # Besides warnings (one line each) and the progress bar: one line, naming what is wrong.
  lines = [line for line in done.stderr.splitlines()
           if line.startswith("tip-make-benchmark:") and ": WARNING: " not in line]
  assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr

"""`tip-eval --pred --ref`: pairs by name, bad files named and skipped, exit 0."""

import json
import subprocess

import numpy as np
import pytest

from PIL import Image

from tests.fixtures import photos
from tip_jax.errors import DataError
from tip_jax.eval import folders, scoring
from tip_jax.image_io import read_rgb, write_png
from tip_jax.metrics import pixel


@pytest.fixture(scope="module")
def pair_folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("pairs")
  ref, pred = root / "ref", root / "pred"
  crops = photos.crops(48, 64)
  noisy = photos.degrade(crops, noise=0.04)
  pred.mkdir()
  for i, (clean, bad) in enumerate(zip(crops, noisy)):
    write_png(clean, str(ref / f"{i:04d}.png"))
    Image.fromarray(bad).save(pred / f"{i:04d}.jpg", quality=95)  # another extension
  (pred / "0099.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt, and unmatched
  write_png(crops[0], str(ref / "0042.png"))                       # no prediction
  (pred / "0000.jpg").write_bytes((pred / "0000.jpg").read_bytes()[:200])  # corrupt, matched
  captions = {f"{i:04d}": "a photo" for i in range(len(crops))}
  (root / "captions.json").write_text(json.dumps(captions))
  return root, len(crops)


def test_scores_good_pairs_and_names_bad_files(pair_folders):
  root, n = pair_folders
  scorer = scoring.Scorer.load("psnr,ssim")
  results, problems = folders.score_folders(str(root / "pred"), str(root / "ref"), scorer,
                                            batch_size=2, progress=False)
  assert results["psnr"]["count"] == n - 1 and results["ssim"]["count"] == n - 1
  named = "\n".join(problems.lines)
  assert "0099.png: no reference" in named and "0042.png: no prediction" in named
  assert "0000: " in named and "not a readable image" in named
  # The mean is the mean of per-pair PSNRs computed directly.
  direct = [float(pixel.psnr(read_rgb(str(root / "pred" / f"{i:04d}.jpg"))[None] / 255.0,
                             read_rgb(str(root / "ref" / f"{i:04d}.png"))[None] / 255.0)[0])
            for i in range(1, n)]
  assert abs(results["psnr"]["mean"] - np.mean(direct)) < 1e-4


def test_cli_exit_0_with_json_and_skipped_files_on_stderr(pair_folders, tmp_path):
  root, n = pair_folders
  out = tmp_path / "scores.json"
  proc = subprocess.run(["tip-eval", f"--pred={root / 'pred'}", f"--ref={root / 'ref'}",
                         "--metrics=psnr,ssim,lpips,fid", f"--captions={root / 'captions.json'}",
                         f"--json={out}"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  scores = json.loads(out.read_text())
  assert set(scores) == {"psnr", "ssim", "lpips"}
  assert all(v["count"] == n - 1 for v in scores.values())
  assert json.loads(proc.stdout) == scores
  assert "skipped 0099.png: no reference of that name" in proc.stderr
  assert "fid left out: it needs the Inception weights" in proc.stderr


def test_no_pairs_or_no_folder_is_one_line(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  scorer = scoring.Scorer.load("psnr")
  with pytest.raises(DataError, match="no image pairs to score"):
    folders.score_folders(str(tmp_path / "a"), str(tmp_path / "b"), scorer, progress=False)
  proc = subprocess.run(["tip-eval", f"--pred={tmp_path / 'absent'}", f"--ref={tmp_path / 'b'}",
                         "--metrics=psnr"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
      f"tip-eval: {tmp_path / 'absent'}: no such folder"]


def test_captions_as_json_lines(tmp_path):
  path = tmp_path / "index.jsonl"
  path.write_text('{"id": "0001", "caption": "a cat"}\n\n{"id": "0002.png", "caption": "x"}\n')
  assert folders.read_captions(str(path)) == {"0001": "a cat", "0002": "x"}
  path.write_text('{"id": "0001"}\n')
  with pytest.raises(DataError, match="index.jsonl:1"):
    folders.read_captions(str(path))

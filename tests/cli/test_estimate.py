"""`tip-estimate` and `tip-restore --restoration auto` in-process, on a tiny random
estimator: one prompt (or JSON object) per image, JPEG files' own quality, one line per
bad input, and one line naming a missing estimator."""

import json

from PIL import Image

from tests.cli.test_restore import FAST, _png, _run, loads  # noqa: F401  (loads: a fixture)
from tests.fixtures.estimator import saved_tiny_estimator, tiny_estimator
from tip_jax.cli import estimate as estimate_cli
from tip_jax.cli import restore as restore_cli


def test_one_prompt_per_image_json_with_sources_and_bad_inputs_on_one_line(tmp_path, capsys):
  folder = saved_tiny_estimator(tmp_path / "estimator")
  photos = tmp_path / "photos"
  photos.mkdir()
  _png(photos / "a.png")
  Image.open(_png(tmp_path / "b.png", seed=1)).save(photos / "b.jpg", quality=40)
  (photos / "broken.png").write_text("not a png")
  _png(photos / "tiny.png", size=(9, 12))
  status, out, err = _run(estimate_cli, photos, "--estimator", folder, capsys=capsys)
  assert status == 1
  lines = out.strip().splitlines()
  expected = tiny_estimator().estimate_file(str(photos / "a.png")).prompt()
  assert lines[0] == f"{photos / 'a.png'}: {expected or estimate_cli.NONE_FOUND}"
  assert lines[1].startswith(f"{photos / 'b.jpg'}: ") and len(lines) == 2
  assert len(err) == 2 and all(e.startswith("tip-estimate: ") for e in err)
  assert "broken.png: not a readable image" in err[0]
  assert "tiny.png: 12x9 pixels is too small" in err[1]

  status, out, err = _run(estimate_cli, photos / "b.jpg", photos / "a.png", "--jsonl",
                          "--estimator", folder, capsys=capsys)
  assert status == 0 and err == []
  jpeg, png = (json.loads(line) for line in out.strip().splitlines())
  assert jpeg["image"] == str(photos / "b.jpg")
  assert jpeg["stages"]["jpeg_quality"] == {**jpeg["stages"]["jpeg_quality"], "present": True,
                                            "value": 40.0, "source": "file", "exact": True}
  assert png["stages"]["jpeg_quality"]["source"] == "estimate"
  assert "Dejpeg with quality 40;" in jpeg["prompt"] or jpeg["blind"]["chosen"]


def test_a_missing_estimator_is_one_line_naming_the_file(tmp_path, capsys):
  status, out, err = _run(estimate_cli, _png(tmp_path / "a.png"), "--estimator",
                          tmp_path / "nowhere", capsys=capsys)
  assert status == 1 and out == ""
  assert err == [f"tip-estimate: cannot load the degradation estimator: {tmp_path}/nowhere/"
                 "config.json: no such file (the degradation estimator; train one with "
                 "configs/estimator.py)"]


def test_restore_auto_prints_the_estimated_prompt_and_keeps_the_size(tmp_path, capsys,
                                                                     loads):  # noqa: F811
  folder = saved_tiny_estimator(tmp_path / "estimator")
  image = _png(tmp_path / "x.png")
  out = tmp_path / "out"
  status, stdout, err = _run(restore_cli, image, "--out", out, "--restoration", "auto",
                             "--estimator", folder, *FAST, capsys=capsys)
  assert status == 0, err
  prompt = tiny_estimator().estimate_file(str(image)).prompt()
  assert f'tip-restore: {image}: estimated restoration prompt "{prompt}"' in stdout
  assert Image.open(out / "x.png").size == Image.open(image).size

  status, _, err = _run(restore_cli, image, "--out", tmp_path / "out2", "--restoration",
                        "auto", "--estimator", tmp_path / "nowhere", *FAST, capsys=capsys)
  assert status == 1 and len(err) == 1 and not (tmp_path / "out2").exists()
  assert err[0].startswith("tip-restore: cannot load the degradation estimator: "
                           f"{tmp_path}/nowhere/config.json: no such file")

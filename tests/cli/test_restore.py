"""`tip-restore` and `tip-walk` in-process on a tiny random restorer: files and folders in,
PNGs out, one line per bad input, early stops for bad prompts and checkpoints."""

import numpy as np
import pytest
from absl import flags
from PIL import Image
from tests.fixtures.restore import tiny_restorer

from tip_jax.cli import restore as restore_cli
from tip_jax.cli import walk as walk_cli
from tip_jax.errors import CheckpointError
from tip_jax.restore import TIPRestorer

FAST = ["--checkpoint", "ckpt", "--steps", "3"]


def _png(path, seed=0, size=(50, 70)):
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
  Image.fromarray(pixels).save(path)
  return path


@pytest.fixture
def loads(monkeypatch):
  """TIPRestorer.from_checkpoint -> the tiny restorer; records the paths it was given."""
  calls = []

  def fake(path, **kwargs):
    calls.append(path)
    return tiny_restorer()

  monkeypatch.setattr(TIPRestorer, "from_checkpoint", fake)
  return calls


def _run(cli, *args, capsys):
  """(exit status, stdout, stderr lines) of one command, flags reset as in a new process."""
  flags.FLAGS.unparse_flags()
  argv = flags.FLAGS([cli.PROG, *map(str, args)])
  try:
    cli.main(argv)
    status = 0
  except SystemExit as e:
    status = e.code
  out, err = capsys.readouterr()
  lines = err.strip().splitlines()
  if isinstance(status, str):   # sys.exit("message"): Python would print it to stderr
    lines, status = lines + [status], 1
  return status or 0, out, lines


def test_folders_and_files_in_pngs_out_bad_inputs_reported(tmp_path, loads, capsys):
  inputs = tmp_path / "in"
  inputs.mkdir()
  _png(inputs / "a.png")
  _png(inputs / "b.jpg.png", seed=1)
  (inputs / "fake.png").write_text("not a png")
  whole = _png(tmp_path / "whole.png", seed=2).read_bytes()
  (inputs / "cut.png").write_bytes(whole[:len(whole) // 2])
  (inputs / "notes.txt").write_text("skipped: not an image suffix")
  extra = _png(tmp_path / "c.png", seed=3)
  out = tmp_path / "out"
  status, stdout, err = _run(restore_cli, inputs, extra, tmp_path / "missing.png", "--out", out,
                             *FAST, capsys=capsys)
  assert status == 1
  assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg.png", "c.png"]
  assert Image.open(out / "a.png").size == (70, 50)
  assert len(err) == 3, err
  assert "cut.png: not a readable image" in err[0] and "truncated" in err[0]
  assert "fake.png: not a readable image" in err[1]
  assert "missing.png: no such file" in err[2]
  assert "restored 3 of 6" in stdout
  assert loads == ["ckpt"]


def test_existing_outputs_are_kept_without_overwrite(tmp_path, loads, capsys):
  image = _png(tmp_path / "x.png")
  out = tmp_path / "out"
  out.mkdir()
  (out / "x.png").write_bytes(b"keep me")
  status, _, err = _run(restore_cli, image, "--out", out, *FAST, capsys=capsys)
  assert status == 1 and len(err) == 1 and "exists; pass --overwrite" in err[0]
  assert (out / "x.png").read_bytes() == b"keep me"
  status, _, err = _run(restore_cli, image, "--out", out, "--overwrite", *FAST, capsys=capsys)
  assert status == 0 and err == []
  first = np.asarray(Image.open(out / "x.png"))
  _run(restore_cli, image, "--out", out, "--overwrite", *FAST, capsys=capsys)
  np.testing.assert_array_equal(np.asarray(Image.open(out / "x.png")), first)  # same seed


@pytest.mark.parametrize("args,message,loaded", [
    (["--restoration", "Sharpen with sigma 2"], "unknown clause 'Sharpen with sigma 2'", False),
    (["--restoration", "Dejpeg with quality 400"], "Dejpeg needs a value in [1, 100]", False),
    (["--checkpoint", "BROKEN"], "cannot load checkpoint BROKEN: bad/ has no config.json", False),
    (["--tile", "64", "--tile_overlap", "64"], "--tile_overlap must be smaller", False),
    (["--samples", "0"], "--samples must be at least 1", False),
    (["--color_fix_levels", "0"], "--color_fix_levels must be at least 1", False),
])
def test_prompt_checkpoint_and_option_errors_stop_before_any_work(tmp_path, monkeypatch, loads, capsys,
                                                           args, message, loaded):
  def broken(path, **kwargs):
    raise CheckpointError("bad/ has no config.json")

  if "BROKEN" in args:
    monkeypatch.setattr(TIPRestorer, "from_checkpoint", broken)
  out = tmp_path / "out"
  status, _, err = _run(restore_cli, _png(tmp_path / "x.png"), "--out", out, *FAST, *args,
                        capsys=capsys)
  assert status == 1 and len(err) == 1 and message in err[0], err
  assert err[0].startswith("tip-restore: ") and not out.exists()
  assert bool(loads) == loaded


def test_walk_writes_one_labelled_grid(tmp_path, loads, capsys):
  grid = tmp_path / "walk.png"
  status, stdout, err = _run(walk_cli, _png(tmp_path / "x.png"), "--out", grid, *FAST,
                             "--row_values", "0.02,0.10", "--col_values", "1,3",
                             capsys=capsys)
  assert status == 0 and err == [], err
  assert "2x2 restorations" in stdout
  im = Image.open(grid)
  assert im.width == 2 * 70 and im.height > 3 * 50   # input row + 2 rows, labels under each
  assert walk_cli.walk_prompts("Denoise with sigma {}", ["0.1"], "Deblur with sigma {}",
                               ["3"]) == [["Deblur with sigma 3.0; Denoise with sigma 0.10;"]]
  status, _, err = _run(walk_cli, tmp_path / "x.png", "--out", grid, *FAST, capsys=capsys)
  assert status == 1 and "exists; pass --overwrite" in err[0]


def test_the_papers_prompts_restore_with_a_warning_and_walk_tokens_agree(tmp_path, loads, capsys,
                                                                        caplog):
  """Fig. 6 / Fig. 8 / §1 strengths beyond the training ranges are restored (one warning
  naming the range), and tip-restore gives the model what tip-walk gives it."""
  image = _png(tmp_path / "x.png")
  for i, prompt in enumerate(["Denoise with sigma 0.24", "Upsample to 6.0x; Deblur with sigma 2.9;",
                              "deblur with sigma 3.5"]):
    status, _, err = _run(restore_cli, image, "--out", tmp_path / f"out{i}", "--restoration",
                          prompt, *FAST, capsys=capsys)
    assert status == 0, err
  assert any("outside" in r.getMessage() and "trained on" in r.getMessage()
             for r in caplog.records)
  restorer = tiny_restorer()
  walked = walk_cli.walk_prompts("Denoise with sigma {}", ["0.24"], "deblur with sigma {}", ["3"])
  assert restorer.restoration_conditioning("deblur with sigma 3; denoise with sigma 0.24")[0] \
      == walked[0][0] == "Deblur with sigma 3.0; Denoise with sigma 0.24;"


def test_averaging_and_colour_fix_flags_reach_the_restorer(tmp_path, loads, capsys):
  """--samples and --color_fix_levels restore what `TIPRestorer.restore` gives with them."""
  image = _png(tmp_path / "x.png")
  out = tmp_path / "out"
  status, _, err = _run(restore_cli, image, "--out", out, *FAST, "--samples", "2",
                        "--color_fix", "wavelet", "--color_fix_levels", "2", capsys=capsys)
  assert status == 0 and err == [], err
  expected = tiny_restorer().restore(np.asarray(Image.open(image)), steps=3, seed=0,
                                     samples=2, color_fix="wavelet", color_fix_levels=2)
  np.testing.assert_array_equal(np.asarray(Image.open(out / "x.png")), expected)

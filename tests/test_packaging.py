"""The wheel carries what an install needs outside a source checkout: CLIP's BPE table and
the shipped prior and the trained degradation estimator as package data, and every console
script pointing at `tip_jax.cli`."""

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_ships_the_bpe_table_and_the_scripts(tmp_path):
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True,
                 timeout=600)
  wheel = zipfile.ZipFile(next(tmp_path.glob("tip_jax-*.whl")))
  names = set(wheel.namelist())
  assert "tip_jax/third_party/clip_bpe/bpe_simple_vocab_16e6.txt.gz" in names
  assert "tip_jax/third_party/clip_bpe/LICENSE" in names
  # The shipped prior (model.backbone=embedded): every file of the diffusers folder.
  prior = ROOT / "tip_jax" / "assets" / "prior"
  shipped = {f"tip_jax/assets/prior/{p.relative_to(prior)}" for p in prior.rglob("*")
             if p.is_file()}
  assert len(shipped) >= 11 and shipped <= names, shipped - names
  assert {"tip_jax/assets/estimator/model.safetensors",
          "tip_jax/assets/estimator/config.json"} <= names
  scripts = next(n for n in names if n.endswith("entry_points.txt"))
  lines = [line for line in wheel.read(scripts).decode().splitlines() if "=" in line]
  assert len(lines) == 12 and all("= tip_jax.cli." in line for line in lines), lines
  assert "tip-convert-inception = tip_jax.cli.convert_inception:run" in lines, lines
  assert "tip-eval = tip_jax.cli.eval:run" in lines, lines
  assert "tip-make-benchmark = tip_jax.cli.make_benchmark:run" in lines, lines
  assert "tip-demo = tip_jax.cli.demo:run" in lines, lines
  assert "tip-export-backbone = tip_jax.cli.export_backbone:run" in lines, lines
  assert "tip-estimate = tip_jax.cli.estimate:run" in lines, lines

"""Every console script, run as a user would: `--help` prints its usage with an example
and its own flags, and exits 0."""

import shutil
import subprocess

import pytest

# script -> flags its help must list (its own, and shared ones it uses)
SCRIPTS = {
    "tip-train": ["--config", "--workdir", "--distributed"],
    "tip-restore": ["--restoration", "--checkpoint", "--steps", "--out", "--overwrite", "--seed",
                    "--estimator"],
    "tip-walk": ["--rows", "--col_values", "--checkpoint", "--out"],
    "tip-degrade": ["--n", "--prompt", "--out", "--seed"],
    "tip-prepare": ["--captions", "--output", "--shard_size"],
    "tip-models": ["--geometry", "--backbone"],
    "tip-convert-inception": [],
    "tip-eval": ["--pred", "--ref", "--captions", "--metrics", "--json", "--inception", "--clip"],
    "tip-make-benchmark": ["--kind", "--images", "--captions", "--out", "--count", "--size",
                           "--seed"],
    "tip-demo": ["--checkpoint", "--host", "--port", "--max_upload_mb", "--max_side", "--steps",
                 "--seed", "--estimator"],
    "tip-export-backbone": ["--step", "--ema", "--scale_images", "--overwrite"],
    "tip-estimate": ["--jsonl", "--estimator"],
}


@pytest.fixture(scope="module")
def helps():
  missing = [s for s in SCRIPTS if shutil.which(s) is None]
  if missing:
    pytest.fail(f"console scripts not installed: {missing} (pip install -e .)")
  procs = {s: subprocess.Popen([s, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for s in SCRIPTS}
  return {s: (p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for s, p in procs.items()}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_shows_usage_example_and_flags(helps, script):
  code, out, err = helps[script]
  assert code == 0, err
  assert out.startswith(f"Usage: {script} "), out[:200]
  assert f"\n    {script} " in out                  # an example command
  for flag in SCRIPTS[script]:
    boolean = "--[no]" + flag[2:] + ":"
    assert flag + ":" in out or boolean in out, (flag, out)
  assert "Try --helpfull" in out


def test_every_script_loads_in_one_process():
  """Flags are defined once: no two scripts define the same flag (absl would raise
  DuplicateFlagError on the second import)."""
  import importlib
  for name in ("train", "restore", "walk", "degrade", "prepare", "models", "convert_inception",
               "make_benchmark", "eval", "demo", "export_backbone", "estimate"):
    assert callable(importlib.import_module(f"tip_jax.cli.{name}").run)

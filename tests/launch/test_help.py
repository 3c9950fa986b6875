"""Both launchers' `--help`, as a user runs it: usage, an example and the shared flags,
exit 0, without JAX or xmanager importable."""

import subprocess
import sys

import pytest

from tests.fixtures.launch import ROOT, stand_in_cloud


@pytest.mark.parametrize("script", ["tpu_vm", "xm_launch"])
def test_help_shows_usage_example_and_flags(tmp_path, script):
  proc = subprocess.run([sys.executable, "-m", f"launch.{script}", "--help"], cwd=ROOT,
                        env=stand_in_cloud(tmp_path, {}), capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith(f"Usage: python -m launch.{script} ")
  assert f"\n    python -m launch.{script} --config configs/tip.py:sd15 " in proc.stdout
  own = ["--title"] if script == "xm_launch" else []
  for flag in ("--config", "--workdir", "--topology", "--tpu", "--eval_tpu", "--sweep",
               "--dry_run", "--setup", *own):
    assert f"  {flag}" in proc.stdout or f"  --[no]{flag[2:]}" in proc.stdout, flag

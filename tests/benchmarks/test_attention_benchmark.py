"""benchmarks/attention.py at a toy size: three sides timed, one JSON object."""

import json
import os
import subprocess
import sys


def test_the_script_times_three_sides_and_checks_them_against_pytorch():
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "attention.py"),
                         "--tokens", "64", "--heads", "2", "--chunk", "16", "--repeats", "2",
                         "--threads", "1"], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout)
  for side in ("ours_blocked", "jax_xla", "pytorch_sdpa"):
    assert set(result[side]) == {"forward", "forward+backward"}
    assert result[side]["forward+backward"]["median_ms"] > 0
  assert set(result["ratio_over_pytorch"]) == {"ours_blocked", "jax_xla"}
  assert max(result["max_abs_diff_vs_pytorch"].values()) < 1e-5

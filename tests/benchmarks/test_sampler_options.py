"""benchmarks/sampler_options.py: each variant of the restorer's inference options scored
on both embedded held-out sets, beside the degraded input."""

import numpy as np
import pytest

from benchmarks import sampler_options
from tests.fixtures.checkpoint import tiny_checkpoint  # noqa: F401  (a fixture)


def test_every_variant_is_scored_on_both_sets(tiny_checkpoint):  # noqa: F811
  variants = ({"guidance": 1.0}, {"guidance": 1.0, "mode": "blind", "color_fix": "wavelet",
                                  "strength": 0.5, "steps": 1, "timestep_spacing": "leading"})
  result = sampler_options.measure(tiny_checkpoint, variants, count=2, steps=2, batch=2)
  assert sorted(result) == ["embedded_param_32", "embedded_realesrgan_32"]  # 32² run
  for scores in result.values():
    assert set(scores["input"]) == {"psnr", "ssim", "lpips"}
    rows = scores["variants"]
    assert [r["mode"] for r in rows] == ["full", "blind"]
    assert rows[1]["color_fix"] == "wavelet" and rows[1]["strength"] == 0.5
    # A variant's own step count and layout win over --steps and the run's (the tiny
    # config's "trailing").
    assert [(r["steps"], r["timestep_spacing"]) for r in rows] == [(2, "trailing"),
                                                                   (1, "leading")]
    for row in rows:
      assert all(np.isfinite(row[m]) for m in ("psnr", "ssim", "lpips"))
    # Different sampling options give different restorations of the same inputs.
    assert rows[0]["psnr"] != rows[1]["psnr"]


def test_an_unknown_mode_is_refused_before_any_work():
  with pytest.raises(ValueError, match="mode must be one of"):
    sampler_options.measure("/nonexistent", ({"mode": "semantic"},))

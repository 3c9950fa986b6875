"""benchmarks/estimator.py: the held-out draws carry their truth, the tables count what
they say they count, and the TIP comparison restores both embedded sets in every mode."""

import numpy as np
import pytest

from benchmarks import estimator as bench
from tests.fixtures.checkpoint import tiny_checkpoint  # noqa: F401  (a fixture)
from tests.fixtures.estimator import CROP, tiny_estimator
from tip_jax.estimate.estimator import Estimate, StageEstimate
from tip_jax.estimate.heads import STAGES


@pytest.fixture(scope="module")
def draws():
  return bench.heldout_draws(24, seed=0, size=CROP)


def _truth(draws, i) -> Estimate:
  """What a perfect estimator would say about draw i."""
  stages = {f: StageEstimate(present=bool(draws[f"{f}_on"][i]), probability=1.0,
                             value=float(draws[f][i])) for f in STAGES}
  return Estimate(blind=bool(draws["blind"][i]), blind_probability=1.0, stages=stages)


def test_draws_are_seeded_8_bit_held_out_crops_with_their_truth(draws):
  assert draws["images"].shape == (24, CROP, CROP, 3) and draws["images"].dtype == np.uint8
  assert 0 < draws["blind"].sum() < 24
  np.testing.assert_array_equal(bench.heldout_draws(24, seed=0, size=CROP)["images"],
                                draws["images"])
  on = draws["noise_sigma_on"]
  assert np.all((draws["noise_sigma"][on] >= 0.01) & (draws["noise_sigma"][on] <= 0.12))


def test_tables_count_what_they_claim(draws):
  tables = bench.estimator_tables(tiny_estimator(), draws)
  tip = int((~draws["blind"]).sum())
  assert tables["draws"] == 24 and tables["blind"]["positives"] == draws["blind"].sum()
  for field in STAGES:
    row = tables[field]
    assert row["count"] == tip and row["positives"] == draws[f"{field}_on"][~draws["blind"]].sum()
    assert 0 <= row["accuracy"] <= 1 and row["strength_mae"] >= 0
  noise = bench.noise_table([_truth(draws, i) for i in range(24)], draws)
  assert noise["all_parameterised"]["count"] == tip
  assert noise["with_noise"]["count"] == (draws["noise_sigma_on"] & ~draws["blind"]).sum()
  assert all(r["ours_mae"] == 0 for r in noise.values())       # the truth scores 0
  assert noise["all_parameterised"]["estimate_sigma_mae"] > 0
  assert bench._presence(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == {
      "count": 4, "positives": 2, "accuracy": 0.5, "precision": 0.5, "recall": 0.5,
      "f1": 0.5}
  assert "| noise_sigma |" in bench.markdown({"estimator": tables, "seed": 0})


@pytest.mark.slow
def test_the_tip_comparison_restores_both_sets_with_every_prompt(tiny_checkpoint):  # noqa: F811
  result = bench.compare_prompts(tiny_checkpoint, tiny_estimator(), count=2, seed=0, steps=2)
  sets = [k for k in result if k.startswith("embedded_")]
  assert sorted(sets) == [f"embedded_{s}_{CROP}" for s in ("param", "realesrgan")]
  for name in sets:
    rows = result[name]
    assert rows["images"] == 2 and 0 <= rows["auto_equals_true"] <= 1
    for mode in ("input", "blind", "auto", "true"):
      assert set(rows[mode]) == {"psnr", "ssim", "lpips"}
  assert "| auto == true |" in bench.markdown({"tip": result, "seed": 0})

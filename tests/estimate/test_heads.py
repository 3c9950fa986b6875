"""The estimator's targets are the drawn degradation parameters, in the unit space its
strengths are regressed in, and decode back onto the training range."""

import jax
import numpy as np
import pytest

from tip_jax.degrade import DegradeConfig, sample_params
from tip_jax.degrade.parameterized import TIPConfig
from tip_jax.estimate import heads
from tip_jax.estimate.network import DegradationEstimator, NetworkConfig

RANGES = TIPConfig().ranges


@pytest.mark.parametrize("field", heads.STAGES)
def test_unit_space_spans_the_training_range_and_decodes_back(field):
  low, high = RANGES[field]
  middle = np.sqrt(low * high) if heads.LOG_SPACE[field] else (low + high) / 2
  assert heads.to_unit(field, low, RANGES, np) == pytest.approx(0.0)
  assert heads.to_unit(field, high, RANGES, np) == pytest.approx(1.0)
  assert heads.to_unit(field, middle, RANGES, np) == pytest.approx(0.5)
  for value in (low, middle, high):
    assert heads.to_value(field, heads.to_unit(field, value, RANGES, np), RANGES) == \
        pytest.approx(value)
  assert heads.to_value(field, -3.0, RANGES) == pytest.approx(low)    # clipped into range
  assert heads.to_value(field, 7.0, RANGES) == pytest.approx(high)


def test_targets_are_the_drawn_parameters():
  params, prompts = sample_params(3, 64, DegradeConfig(size=(16, 16)))
  t = jax.jit(lambda p: heads.targets(p, RANGES))(params)   # what the train step runs
  blind = np.asarray(t["blind"]) > 0.5
  np.testing.assert_array_equal(blind, [p == "Remove all degradation" for p in prompts])
  assert 0 < blind.sum() < 64
  present = np.asarray(t["present"]) > 0.5
  np.testing.assert_array_equal(present[:, 2], params.tip.noise_on)
  strength = np.asarray(t["strength"])
  on = present[:, 2]
  np.testing.assert_allclose(
      [heads.to_value("noise_sigma", u, RANGES) for u in strength[on, 2]],
      params.tip.noise_sigma[on], rtol=1e-5)
  assert np.all(np.isfinite(strength)) and np.all((strength >= -1e-6) & (strength <= 1 + 1e-6))


def test_the_network_reads_any_size_and_writes_one_row_per_image():
  module = DegradationEstimator(NetworkConfig(widths=(4, 8), head=8))
  params = module.init(jax.random.key(0), *module.example_inputs())["params"]
  for shape in ((2, 32, 32, 3), (1, 48, 80, 3)):
    out = module.apply({"params": params}, np.zeros(shape, np.float32))
    assert out.shape == (shape[0], len(heads.OUTPUTS))

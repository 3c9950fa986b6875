"""TPU slice names → chips, hosts, shape and gcloud's accelerator type, as Cloud TPU's
configuration tables give them."""

import pytest

from launch.topology import parse
from tip_jax.errors import ConfigError


@pytest.mark.parametrize("name, chips, hosts, shape, accelerator_type", [
    ("v5e-8", 8, 1, "2x4", "v5litepod-8"),        # v5e and v6e count chips; 8 on one host
    ("v5e-16", 16, 4, "4x4", "v5litepod-16"),
    ("v5e-256", 256, 64, "16x16", "v5litepod-256"),
    ("v6e-16", 16, 4, "4x4", "v6e-16"),
    ("v4-8", 4, 1, "2x2x1", "v4-8"),               # v4 and v5p count TensorCores, 2 a chip
    ("v4-32", 16, 4, "2x2x4", "v4-32"),
    ("v5p-16", 8, 2, "2x2x2", "v5p-16"),
    ("v5p-64", 32, 8, "2x4x4", "v5p-64"),
    ("v5p-256", 128, 32, "4x4x8", "v5p-256"),
    ("v3-32", 16, 4, "4x4", "v3-32"),
])
def test_slices(name, chips, hosts, shape, accelerator_type):
  t = parse(name)
  assert (t.chips, t.hosts, t.shape, t.accelerator_type) == (chips, hosts, shape,
                                                            accelerator_type)


@pytest.mark.parametrize("name", ["v5e-12", "v4-4", "v9-8", "tpu", "v5litepod-16"])
def test_unknown_slices_are_one_line_errors(name):
  with pytest.raises(ConfigError, match=f"unknown TPU topology '{name}'"):
    parse(name)

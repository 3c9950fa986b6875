"""TPU slice names ("v5e-16", "v4-32", "v5p-64") and what follows from them.

The number in a name counts TensorCores for v2, v3, v4 and v5p (two per chip) and chips
for v5e and v6e (one core each), as Cloud TPU names them. A slice larger than one host
has four chips per host; a single host holds up to 4 chips (8 for v5e and v6e). The
shape is the slice's default chip grid (v5e-16: 4x4; v4-32: 2x2x4; v5p-64: 2x4x4), what
xmanager's `JobRequirements` and the TPU API call its topology.
"""

from __future__ import annotations

import dataclasses
import re

from tip_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class _Family:
  cores_per_chip: int
  dims: int                 # 2-D or 3-D torus
  host_chips: int           # the most chips a single-host slice has
  accelerator_prefix: str   # gcloud's --accelerator-type before the dash
  min_count: int


_FAMILIES = {
    "v2": _Family(2, 2, 4, "v2", 8),
    "v3": _Family(2, 2, 4, "v3", 8),
    "v4": _Family(2, 3, 4, "v4", 8),
    "v5p": _Family(2, 3, 4, "v5p", 8),
    "v5e": _Family(1, 2, 8, "v5litepod", 1),
    "v6e": _Family(1, 2, 8, "v6e", 1),
}
_CHIPS_PER_HOST = 4  # in every multi-host slice


@dataclasses.dataclass(frozen=True)
class Topology:
  """One TPU slice: `parse("v5e-16")` → 16 chips on 4 hosts, shape 4x4, gcloud's
  accelerator type v5litepod-16."""

  name: str
  family: str
  chips: int
  hosts: int
  shape: str
  accelerator_type: str

  def __str__(self) -> str:
    chips = "1 chip" if self.chips == 1 else f"{self.chips} chips"
    hosts = "1 host" if self.hosts == 1 else f"{self.hosts} hosts"
    return f"{self.name} ({chips}, {self.shape}, {hosts}; gcloud type {self.accelerator_type})"


def _shape(chips: int, dims: int) -> str:
  if dims == 2:  # the squarest power-of-two grid, the shorter side first
    short = 1 << ((chips.bit_length() - 1) // 2)
    return f"{short}x{chips // short}"
  shape = [2, 2, 1]  # 3-D slices start at one host's 2x2x1 and grow along the smallest axis
  while shape[0] * shape[1] * shape[2] < chips:
    axis = max(i for i in range(3) if shape[i] == min(shape))
    shape[axis] *= 2
  return "x".join(map(str, shape))


def parse(name: str) -> Topology:
  match = re.fullmatch(r"(v\d+[a-z]?)-(\d+)", name.strip())
  family = _FAMILIES.get(match.group(1)) if match else None
  count = int(match.group(2)) if match else 0
  if family is None or count < family.min_count or count & (count - 1):
    raise ConfigError(f"unknown TPU topology {name!r}: expected FAMILY-COUNT with FAMILY in "
                      f"{sorted(_FAMILIES)} and a power-of-two COUNT, e.g. v5e-16, v4-32, v5p-64")
  chips = count // family.cores_per_chip
  hosts = 1 if chips <= family.host_chips else chips // _CHIPS_PER_HOST
  return Topology(name=name.strip(), family=match.group(1), chips=chips, hosts=hosts,
                  shape=_shape(chips, family.dims),
                  accelerator_type=f"{family.accelerator_prefix}-{count}")

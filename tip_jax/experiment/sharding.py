"""Device meshes, logical-axis sharding rules, and placing host arrays on a mesh.

Params carry logical axis names (see `tip_jax.models.layers`); a config holds rules
mapping each logical name to a mesh axis (`data`, `fsdp`, `tensor`) or None. A
dimension that a mesh axis does not divide is replicated instead, so one rule set
serves every model size and mesh (SD's 4-channel conv_out stays whole on an
8-way fsdp axis while its 320-channel convs are split).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
from absl import logging
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tip_jax.errors import ConfigError
from tip_jax.models import params as params_lib
from tip_jax.models.backbone import Backbone

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Fully-sharded data parallel: every large weight split over `fsdp` on its output side.
FSDP_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("conv_out", "fsdp"), ("mlp", "fsdp"), ("heads", "fsdp"), ("vocab", "fsdp"),
    ("conv_in", None), ("embed", None), ("norm", None), ("pos", None),
)
# Megatron-style tensor parallelism on attention heads and MLP widths, fsdp elsewhere.
TENSOR_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("heads", "tensor"), ("mlp", "tensor"), ("conv_out", "fsdp"), ("vocab", "fsdp"),
    ("conv_in", None), ("embed", None), ("norm", None), ("pos", None),
)


RULES = {"fsdp": FSDP_RULES, "tensor": TENSOR_RULES}


def rule_set(name: str) -> Rules:
  """The rule set a config's `sharding_rules` names."""
  if name not in RULES:
    raise ConfigError(f"sharding_rules={name!r}: expected one of {sorted(RULES)}")
  return RULES[name]


def batch_axes(rules: Rules) -> tuple[str, ...]:
  """The mesh axes the `batch` rule splits examples over."""
  axes = dict(rules).get("batch")
  return (axes,) if isinstance(axes, str) else tuple(axes or ())


def make_mesh(shape: Mapping[str, int] | Sequence[int],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (`data`, `fsdp`, `tensor`) mesh; at most one axis may be -1 (= the rest)."""
  if isinstance(shape, Mapping):
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
      raise ConfigError(f"unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}")
    shape = [shape.get(axis, 1) for axis in MESH_AXES]
  shape = list(shape)
  devices = list(devices if devices is not None else jax.devices())
  if shape.count(-1) > 1:
    raise ConfigError(f"mesh {shape}: at most one axis may be -1")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if len(devices) % known:
      raise ConfigError(f"mesh {shape} does not divide {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ConfigError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                     f"there are {len(devices)}")
  # Auto axes: XLA propagates shardings through the model (GSPMD); params and batches
  # are placed explicitly, activations are left to the compiler.
  return jax.make_mesh(tuple(shape), MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def mesh_spec(logical: PartitionSpec, shape: Sequence[int], mesh: Mesh,
              rules: Rules) -> PartitionSpec:
  """Logical names -> mesh axes, dropping axes that do not divide or are already used."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name, size in zip(tuple(logical) + (None,) * (len(shape) - len(logical)), shape):
    axes = table.get(name) if name is not None else None
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
    if axes and size % math.prod(mesh.shape[a] for a in axes):
      axes = ()
    used.update(axes)
    out.append(axes[0] if len(axes) == 1 else (axes or None))
  return PartitionSpec(*out)


def param_shardings(abstract: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a boxed abstract tree (from `params.abstract_params`)."""
  logical = nn.get_partition_spec(abstract)
  shapes = nn.meta.unbox(abstract)
  specs = jax.tree.map(lambda spec, s: mesh_spec(spec, s.shape, mesh, rules), logical, shapes,
                       is_leaf=lambda x: isinstance(x, PartitionSpec))
  sharded = sum(any(a is not None for a in s) for s in jax.tree.leaves(
      specs, is_leaf=lambda x: isinstance(x, PartitionSpec)))
  logging.info("sharding rules split %d of %d params", sharded, len(jax.tree.leaves(shapes)))
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Leading axis over whatever the `batch` rule names, the rest replicated."""
  axes = tuple(a for a in batch_axes(rules) if mesh.shape[a] > 1)
  lead = axes[0] if len(axes) == 1 else (axes or None)
  return NamedSharding(mesh, PartitionSpec(lead, *([None] * (ndim - 1))))


def leading_shards(sharding: NamedSharding) -> int:
  """How many pieces `sharding` cuts an array's leading (batch) axis into."""
  lead = sharding.spec[0] if len(sharding.spec) else None
  axes = lead if isinstance(lead, tuple) else (lead,)
  return int(np.prod([sharding.mesh.shape[a] for a in axes if a is not None]))


def bytes_per_device(tree: Any) -> int:
  """Largest per-device footprint of a tree of sharded arrays (for logs and tests)."""
  per_device: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
  return max(per_device.values(), default=0)


def abstract(tree: Any, shardings: Any, dtype: Any = None) -> Any:
  """ShapeDtypeStructs carrying shardings: what AOT lowering and Orbax restore take."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, dtype or s.dtype, sharding=sh),
                      tree, shardings)


def frozen_shardings(backbone: Backbone, mesh: Mesh, rules: Rules,
                     names: Sequence[str] = ("unet", "vae", "text_encoder")) -> dict:
  """Shardings of `backbone.params` ({"unet", "vae", "text_encoder"}), or of its `names`."""
  parts = {"unet": backbone.unet, "vae": backbone.vae, "text_encoder": backbone.text_encoder}
  return {k: param_shardings(params_lib.abstract_params(parts[k].module), mesh, rules)
          for k in names}


def replicated(tree: Any, mesh: Mesh) -> Any:
  """A whole copy of every leaf on every device (small frozen trees without axis names)."""
  return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def place(tree: Any, shardings: Any) -> Any:
  """Host arrays (equal on every process) → global arrays laid out as `shardings`."""
  def one(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  return jax.tree.map(one, tree, shardings)


def global_batch(local: Any, mesh: Mesh, rules: Rules) -> Any:
  """Each process's rows → one global array per leaf, split over the batch axes."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      batch_sharding(mesh, rules, np.ndim(x)), np.asarray(x)), local)

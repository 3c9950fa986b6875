"""Param-tree helpers: abstract shapes, logical axis names, counts, initialisation.

Every top-level model defines `example_inputs(batch)`, a tuple of arrays whose shapes
drive `init`; under `jax.eval_shape` nothing is allocated, which is how full-size
SD trees are sized and sharded before any weight exists.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np

PyTree = Any


def _init_fn(module: nn.Module, batch: int):
  def init(rng):
    return module.init(rng, *module.example_inputs(batch))["params"]
  return init


def abstract_params(module: nn.Module, batch: int = 1) -> PyTree:
  """Boxed (`nn.LogicallyPartitioned`) tree of `ShapeDtypeStruct`s; allocates nothing."""
  return jax.eval_shape(_init_fn(module, batch), jax.random.key(0))


def param_shapes(module: nn.Module) -> PyTree:
  """Plain tree of `ShapeDtypeStruct`s (logical names stripped)."""
  return nn.meta.unbox(abstract_params(module))


def logical_axes(module: nn.Module) -> PyTree:
  """Tree of `PartitionSpec`s holding each param's logical axis names."""
  return nn.get_partition_spec(abstract_params(module))


# Initialisation runs once, so on CPU its compile time is all that matters: LLVM's
# optimisation passes take most of it (seconds per model) for no gain at run time.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def init_params(module: nn.Module, rng: jax.Array, batch: int = 1) -> PyTree:
  """Randomly initialised, unboxed params."""
  lowered = jax.jit(_init_fn(module, batch)).lower(rng)
  options = _FAST_COMPILE if jax.default_backend() == "cpu" else None
  return nn.meta.unbox(lowered.compile(options)(rng))


def count_params(tree: PyTree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))

"""AOT-compiles the TIP train step for a TPU topology on this (CPU) machine.

libtpu's topology descriptions let XLA compile for chips that are not here, so the
per-chip memory and FLOPs of a pod-scale step can be read without a TPU:

    pip install "jax[tpu]"      # brings libtpu (a separate venv keeps it off CPU runs)
    JAX_PLATFORMS=cpu python benchmarks/compile_tpu.py --topology v5e:2x2 --per_chip 1,2,4
    JAX_PLATFORMS=cpu python benchmarks/compile_tpu.py --topology v5e:4x4 --remat nothing_saveable

Every model is abstract (`jax.eval_shape`): nothing is allocated. The degradation
stage runs as on an accelerator (`vmap` loop). Prints one JSON line per batch size.
"""

from __future__ import annotations

import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.experimental import topologies

from tip_jax.degrade import params_to_tree, sample_params
from tip_jax.experiment import components, sharding, tasks
from tip_jax.experiment import state as state_lib
from tip_jax.experiment.config import load_config
from tip_jax.train import step as step_lib

_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5e:4x4 or v4:2x2x2.")
_CONFIG = flags.DEFINE_string("config", "sd15", "configs/tip.py argument.")
_PER_CHIP = flags.DEFINE_list("per_chip", ["1", "2", "4", "8"], "Per-chip batch sizes to try.")
_REMAT = flags.DEFINE_string("remat", "", "jax.checkpoint_policies name ('' = no remat).")
_MESH = flags.DEFINE_string("mesh", "data=1,fsdp=-1,tensor=1", "Mesh axes over the chips.")
_RESOLUTION = flags.DEFINE_integer("resolution", 512, "Training resolution.")
_HBM_GIB = flags.DEFINE_float("hbm_gib", 16.0, "Per-chip memory to fit (v5e: 16 GiB).")


def abstract_batch(config, degrade_config, batch: int, shardings_for) -> dict:
  r = config.data.resolution
  one = params_to_tree(sample_params(0, 1, degrade_config)[0])
  tree = {"image": jax.ShapeDtypeStruct((batch, r, r, 3), jnp.uint8),
          "semantic_ids": jax.ShapeDtypeStruct((batch, 77), jnp.int32),
          "restoration_ids": jax.ShapeDtypeStruct((batch, 77), jnp.int32),
          "degrade": jax.tree.map(lambda x: jax.ShapeDtypeStruct((batch,) + np.shape(x),
                                                                 np.asarray(x).dtype), one),
          "index": jax.ShapeDtypeStruct((batch,), jnp.int32)}
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                     sharding=shardings_for(len(s.shape))), tree)


def compile_step(config, devices, per_chip: int) -> dict:
  config.batch_size = per_chip * len(devices)
  mesh_shape = {k: int(v) for k, v in (kv.split("=") for kv in _MESH.value.split(","))}
  mesh = sharding.make_mesh(mesh_shape, devices)
  rules = sharding.rule_set(config.sharding_rules)
  comps = components.build(config, abstract=True)
  dtype = components.model_options(config).dtype
  degrade_config = components.degrade_config(config)
  tx = state_lib.optimizer(config)
  state_sh = state_lib.state_shardings(comps.controlnet, tx, mesh, rules)
  state = state_lib.abstract_state(comps.controlnet, tx, state_sh)
  frozen = sharding.abstract(comps.backbone.params,
                             sharding.frozen_shardings(comps.backbone, mesh, rules), dtype)
  batch = abstract_batch(config, degrade_config, config.batch_size,
                         lambda ndim: sharding.batch_sharding(mesh, rules, ndim))
  task = tasks.build(config, comps, mesh, sharding.batch_axes(rules), degrade_config)
  step = jax.jit(step_lib.make_train_step(task, config, tx),
                 out_shardings=(state_sh, None), donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, frozen, batch).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  per_chip_bytes = memory.argument_size_in_bytes + memory.temp_size_in_bytes
  return {"per_chip_batch": per_chip, "global_batch": config.batch_size,
          "argument_gib": memory.argument_size_in_bytes / 2**30,
          "temp_gib": memory.temp_size_in_bytes / 2**30,
          "output_gib": memory.output_size_in_bytes / 2**30,
          "per_chip_gib": per_chip_bytes / 2**30,
          "fits": per_chip_bytes <= _HBM_GIB.value * 2**30,
          "flops_per_chip_step": float(cost.get("flops", float("nan"))) if cost else None,
          "compile_s": seconds}


def main(argv):
  del argv
  topology = topologies.get_topology_desc(_TOPOLOGY.value, "tpu")
  devices = topology.devices
  config = load_config(f"configs/tip.py:{_CONFIG.value}", {"model.backbone": "random"})
  config.data.resolution = _RESOLUTION.value
  config.degrade.loop = "vmap"   # what an accelerator runs; "auto" would see this CPU
  config.model.remat_policy = _REMAT.value
  for per_chip in map(int, _PER_CHIP.value):
    result = compile_step(config, devices, per_chip)
    print(json.dumps({
        "benchmark": "compile_tpu", "topology": _TOPOLOGY.value, "chips": len(devices),
        "device_kind": devices[0].device_kind, "config": _CONFIG.value,
        "resolution": _RESOLUTION.value, "remat": _REMAT.value or None, "mesh": _MESH.value,
        "dtype": config.model.dtype, "host": platform.processor() or platform.machine(),
        **result}), flush=True)


if __name__ == "__main__":
  app.run(main)

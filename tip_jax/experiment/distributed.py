"""The one place multi-process JAX is started, and how its processes agree on a flag."""

from __future__ import annotations

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


def initialize(enabled: bool, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> None:
  """`jax.distributed.initialize` when asked to; a single process needs nothing.

  With no address, JAX detects the cluster itself (TPU pods, SLURM, ...). CPU
  processes talk over gloo, which must be chosen before the backend starts.
  """
  if not enabled:
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def any_process(flag: bool) -> bool:
  """True on every process once `flag` is true on any: decisions that all processes must
  take together (stop and save, skip a checkpoint). A collective on multi-process runs,
  so every process must call it at the same point."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.int32(flag)).any())

"""The one place multi-process JAX is started."""

from __future__ import annotations

import jax
from absl import logging


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

"""`tip-train`: the trainer job (`--mode=train`); the evaluator job will share this entry.

    tip-train --config configs/tip.py:tiny --workdir /tmp/tip_tiny
    tip-train --config configs/tip.py:sd15 --workdir gs://... --config.model.backbone=/data/sd15
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and samples go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train"], "The job to run.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Start multi-process JAX (pods, clusters).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from tip_jax.convert.diffusers import CheckpointError
  from tip_jax.train import distributed, trainer
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  logging.info("config:\n%s", _CONFIG.value)
  try:
    trainer.train(_CONFIG.value, _WORKDIR.value)
  except (CheckpointError, FileNotFoundError, ValueError) as e:
    logging.error("%s", e)
    sys.exit(f"tip-train: {e}")


def run() -> None:
  app.run(main)


if __name__ == "__main__":
  run()

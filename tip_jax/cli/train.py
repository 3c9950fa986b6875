"""Usage: tip-train --config configs/tip.py:BASE[,ABLATION] --workdir DIR [--config.FIELD=VALUE]

    tip-train --config configs/tip.py:tiny --workdir /tmp/tip_tiny
    tip-train --config configs/tip.py:sd15 --workdir gs://bucket/tip_sd15 \\
      --config.model.backbone=/data/sd15 --config.batch_size=256

The trainer job (`--mode=train`; `python -m tip_jax.main` is the same). Running the same
command again resumes from the last checkpoint in DIR.

With `evals.after_training` (the tiny config's default) the trainer then scores its final
checkpoint itself, as the evaluator would, and prints the metrics table: one command
from nothing to a measured model. On pods, run the evaluator job instead:

The evaluator job (`--mode=eval`, same config and DIR, run beside the trainer): scores
every checkpoint as it appears, on the config's `evals` sets and prompt modes, and
stops after the final one (see tip_jax/eval/evaluator.py). On pods and clusters add
--distributed (JAX finds the peers itself, or give --coordinator_address,
--num_processes and --process_id).
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from tip_jax.cli import common

PROG = "tip-train"
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and samples go here.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "The job to run: the trainer, or the evaluator that follows it.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Start multi-process JAX (pods, clusters).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(PROG, f"unexpected arguments {' '.join(argv[1:])}")
  if _CONFIG.value is None or not _WORKDIR.value:
    common.fail(PROG, "--config and --workdir are required")
  workdir = _WORKDIR.value
  log_file = common.log_to_file(PROG, os.path.join(workdir, "logs"))
  # deferred: JAX starts only for real work
  from tip_jax.experiment import checkpoint_files, distributed
  checkpoint_files.quiet_background_failures()
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  logging.info("config:\n%s", _CONFIG.value)
  table = ""
  if _MODE.value == "eval":
    from tip_jax.eval import evaluator
    done = evaluator.evaluate(_CONFIG.value, workdir)
    lines = [f"scored {len(done)} checkpoint(s): "
             f"{os.path.join(workdir, 'eval', 'step_*', 'results.md')}"]
  else:
    from tip_jax.train import trainer
    state = trainer.train(_CONFIG.value, workdir)
    lines = [f"trained to step {int(state.step)}: checkpoints in "
             f"{os.path.join(workdir, 'checkpoints')}",
             f"TensorBoard: tensorboard --logdir {workdir}"]
    if os.path.isdir(os.path.join(workdir, "samples")):
      lines.insert(1, f"sample grids in {os.path.join(workdir, 'samples')}")
    if (_CONFIG.value.task == "tip" and _CONFIG.value.evals.get("after_training")
        and state.step > 0):
      *more, table = _score_final(_CONFIG.value, workdir, int(state.step))
      lines += more
  if log_file:
    lines.append(f"log: {log_file}")
  for line in lines:
    print(f"{PROG}: {line}")
  if table:
    print(table)


def _score_final(config, workdir: str, step: int) -> list[str]:
  """Scores the final checkpoint (see the module docstring): lines saying where the
  grids and table are, then the table itself as the last item."""
  from tip_jax.eval import evaluator
  scorer = evaluator.Evaluator(config, workdir)
  if step not in scorer.state.complete:
    scorer.evaluate(step)
  folder = os.path.join(workdir, "eval", f"step_{step:07d}")
  with open(os.path.join(folder, "results.md"), encoding="utf-8") as f:
    table = "\n".join(line for line in f.read().splitlines()[2:] if line)
  return [f"before/after grids (degraded | restored | clean): {folder}/*.png",
          f"step {step} on the held-out photos (mode 'input' is the degraded input itself): "
          f"{folder}/results.md", table]


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__]], quiet=False)


if __name__ == "__main__":
  run()

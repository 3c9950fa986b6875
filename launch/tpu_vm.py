"""Usage: python -m launch.tpu_vm --config SPEC --workdir DIR --topology SLICE --tpu VM[,VM...]
    [--eval_tpu VM[,VM...]] [--sweep FUNCTION] [--setup] [--dry_run] [-- --config.FIELD=VALUE ...]

    python -m launch.tpu_vm --config configs/tip.py:sd15 --workdir gs://bucket/tip_sd15 \\
      --topology v5e-16 --tpu my-v5e-16 --zone us-west4-a --dry_run \\
      -- --config.model.backbone=/data/sd15

Runs the trainer on every worker of an existing TPU VM (`gcloud compute tpus tpu-vm ssh
--worker=all`), where `tip-train --distributed` lets jax.distributed find its peers from
the TPU environment, and its evaluator (`--mode=eval`, the same config and workdir) on
another TPU VM or on this host. It creates no VM: `--topology` is what each --tpu VM is
checked to be. With --sweep, every point of that function of the config file is a work
unit with its own TPU VM and workdir. --dry_run prints the commands as a shell script.
Run it from the checkout's root; the jobs' output is shown with their names in front.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from typing import IO

from launch import common, plan
from tip_jax.cli import common as cli_common

PROG = "python -m launch.tpu_vm"


@dataclasses.dataclass
class _Running:
  unit: plan.WorkUnit
  job: plan.Job
  process: subprocess.Popen
  relay: threading.Thread
  stopped: bool = False


def _start(unit: plan.WorkUnit, job: plan.Job) -> _Running:
  """Starts a job, its output relayed line by line behind its work unit and role."""
  process = subprocess.Popen(common.resolve(job.command), cwd=plan.ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  relay = threading.Thread(target=_relay, args=(f"[{unit.name} {job.role}]", process.stdout))
  relay.start()
  return _Running(unit, job, process, relay)


def _relay(prefix: str, stream: IO[str]) -> None:
  for line in stream:
    sys.stdout.write(f"{prefix} {line}")
    sys.stdout.flush()


def _wait(running: list[_Running]) -> list[str]:
  """Waits for every job; when one fails, stops the other job of its work unit (an
  evaluator would otherwise wait for a trainer that is gone). Returns what failed."""
  failed = []
  while running:
    time.sleep(0.2)
    for done in [r for r in running if r.process.poll() is not None]:
      running.remove(done)
      done.relay.join()
      if done.process.returncode and not done.stopped:
        failed.append(f"the {done.job.role} of work unit {done.unit.name} "
                      f"(exit {done.process.returncode})")
        for other in running:
          if other.unit is done.unit:
            other.stopped = True
            other.process.terminate()
  return failed


def main(argv: list[str]) -> None:
  launch = plan.build(common.options(argv[1:]))
  if common.DRY_RUN.value:
    print(plan.describe(launch))
    return
  common.prepare(launch)
  running = [_start(unit, job) for unit in launch.units for job in unit.jobs]
  jobs = len(running)
  failed = _wait(running)
  if failed:
    cli_common.fail(PROG, f"failed: {', '.join(failed)}; the other job of its work unit "
                    "was stopped")
  print(f"{jobs} jobs of {len(launch.units)} work unit(s) finished")


def run() -> None:
  cli_common.run(main, PROG, __doc__, [common, sys.modules[__name__]])


if __name__ == "__main__":
  run()

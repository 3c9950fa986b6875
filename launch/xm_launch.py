"""Usage: python -m launch.xm_launch --config SPEC --workdir DIR --topology SLICE --tpu VM[,VM...]
    [--eval_tpu VM[,VM...]] [--sweep FUNCTION] [--title TITLE] [--setup] [--dry_run]
    [-- --config.FIELD=VALUE ...]

    python -m launch.xm_launch --config configs/tip.py:sd15 --workdir gs://bucket/tip_ablations \\
      --topology v5e-16 --sweep sweep --tpu tip-a,tip-b,tip-c,tip-d --zone us-west4-a \\
      --dry_run -- --config.model.backbone=/data/sd15

One xmanager experiment: a work unit per point of the config file's --sweep function (one
without it), each a JobGroup of the trainer and its evaluator, both `tip-train` with the
same config and one workdir (WORKDIR/<unit> in a sweep). The jobs are the commands
`python -m launch.tpu_vm` runs, started and recorded by xmanager's local executor: the
trainer on every worker of the unit's --tpu VM (checked to be a --topology slice), the
evaluator on its --eval_tpu VM or on this host. xmanager 0.8.5's cloud executors cannot
ask for these slices (Vertex AI: TPU v2/v3 only; GKE: no TPU requests), hence existing
TPU VMs. xmanager reports a failed job once all jobs have ended, and an evaluator waits
for its trainer to finish: after a trainer fails, Ctrl+C stops the rest (launch.tpu_vm
stops a failed job's partner itself). --dry_run prints the jobs and needs neither
xmanager nor credentials; to launch, install xmanager in its own venv
(`launch/requirements.txt`, README "Pods: launching on TPU").
"""

from __future__ import annotations

import sys

from absl import flags

from launch import common, plan
from tip_jax.cli import common as cli_common
from tip_jax.errors import ConfigError

try:  # Before flag parsing: xmanager defines flags of its own.
  from xmanager import xm, xm_local
except ImportError:  # the dry run needs no xmanager
  xm = xm_local = None

PROG = "python -m launch.xm_launch"
_TITLE = flags.DEFINE_string("title", "", "The experiment's title (default: tip_jax and the "
                             "config spec).")


def _experiment(launch: plan.Plan, title: str) -> None:
  if xm is None:
    raise ConfigError("xmanager is not installed: pip install -r launch/requirements.txt "
                      "(in its own venv; README 'Pods: launching on TPU')")
  try:
    with xm_local.create_experiment(experiment_title=title) as experiment:
      for unit in launch.units:
        group = {}
        for job in unit.jobs:
          program, *args = common.resolve(job.command)
          [executable] = experiment.package([xm.Packageable(
              executable_spec=xm.Binary(path=program), executor_spec=xm_local.Local.Spec(),
              args=args)])
          group[job.role] = xm.Job(executable, executor=xm_local.Local(),
                                   name=f"{unit.name}_{job.role}")
        experiment.add(xm.JobGroup(**group))
      print(f"xmanager experiment {experiment.experiment_id} '{title}': "
            f"{len(launch.units)} work unit(s) started")
  except RuntimeError as e:  # how xmanager's local executor reports a job's non-zero exit
    cli_common.fail(PROG, f"a job failed: {e}")


def main(argv: list[str]) -> None:
  launch = plan.build(common.options(argv[1:]))
  title = _TITLE.value or f"tip_jax {common.CONFIG.value}"
  if common.DRY_RUN.value:
    print(f"# xmanager experiment '{title}': one work unit per block below, each a "
          "JobGroup(trainer, evaluator) on the local executor")
    print(plan.describe(launch))
    return
  common.prepare(launch)
  _experiment(launch, title)


def run() -> None:
  cli_common.run(main, PROG, __doc__, [common, sys.modules[__name__]])


if __name__ == "__main__":
  run()

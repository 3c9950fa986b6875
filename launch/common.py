"""What both launchers share: their flags (defined once, here), the `Options` those give,
and the steps run before any job starts: the checks, then the optional setup."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from typing import Sequence

from absl import flags

from launch import plan, topology
from tip_jax.errors import ConfigError

CONFIG = flags.DEFINE_string("config", None, "Config spec: a file of this checkout and its "
                             "argument, e.g. configs/tip.py:sd15.")
WORKDIR = flags.DEFINE_string("workdir", None, "The workdir the trainer and its evaluator "
                              "share (gs://...); a sweep's work units get WORKDIR/<unit>.")
TOPOLOGY = flags.DEFINE_string("topology", None, "The TPU slice each trainer runs on, e.g. "
                               "v5e-16, v4-32, v5p-64; every --tpu VM is checked to be one.")
TPU = flags.DEFINE_list("tpu", None, "Existing TPU VMs for the trainers, one per work unit.")
ZONE = flags.DEFINE_string("zone", "", "The VMs' zone (default: gcloud's configured one).")
PROJECT = flags.DEFINE_string("project", "", "The VMs' project (default: gcloud's).")
SWEEP = flags.DEFINE_string("sweep", "", "A sweep function of the config file (sweep, "
                            "sweep_seeds, ...): one work unit per point; none by default.")
EVAL_TPU = flags.DEFINE_list("eval_tpu", [], "Single-host TPU VMs for the evaluators, one "
                             "per work unit; without them the evaluators run on this host.")
REMOTE_DIR = flags.DEFINE_string("remote_dir", "tip_jax", "The checkout on the TPU VMs, "
                                 "from the login directory (see --setup).")
REMOTE_PYTHON = flags.DEFINE_string("remote_python", "python3", "Python on the TPU VMs.")
LOCAL_PYTHON = flags.DEFINE_string("local_python", sys.executable, "The Python with tip_jax "
                                   "installed that runs evaluators on this host.")
SETUP = flags.DEFINE_bool("setup", False, "First copy this checkout's HEAD to every worker of "
                          "the TPU VMs and pip-install it there with jax[tpu].")
DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands and stop: nothing runs, "
                            "no credentials or cloud needed.")


def options(argv: Sequence[str]) -> plan.Options:
  """The flags' `Options`; `argv` holds what followed `--` (config overrides)."""
  if not (CONFIG.value and WORKDIR.value and TOPOLOGY.value and TPU.value):
    raise ConfigError("--config, --workdir, --topology and --tpu are required")
  return plan.Options(
      config=CONFIG.value, workdir=WORKDIR.value, topology=topology.parse(TOPOLOGY.value),
      tpus=tuple(TPU.value), zone=ZONE.value, project=PROJECT.value, sweep=SWEEP.value,
      overrides=tuple(argv), eval_tpus=tuple(EVAL_TPU.value), remote_dir=REMOTE_DIR.value,
      remote_python=REMOTE_PYTHON.value, local_python=LOCAL_PYTHON.value, setup=SETUP.value)


def resolve(command: Sequence[str]) -> list[str]:
  """`command` with its program found on PATH (a missing gcloud is one clear line)."""
  program = shutil.which(command[0])
  if program is None:
    hint = ": install the Google Cloud CLI" if command[0] == "gcloud" else ""
    raise ConfigError(f"{command[0]}: not found on PATH{hint}")
  return [program, *command[1:]]


def prepare(launch: plan.Plan) -> None:
  """Runs the plan's checks, then its setup; the first failure stops the launch."""
  for check in launch.checks:
    result = subprocess.run(resolve(check.command), capture_output=True, text=True)
    if result.returncode:
      detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
      raise ConfigError(f"{check.what}: `{shlex.join(check.command)}` failed: {detail}")
    if check.expect and result.stdout.strip() != check.expect:
      raise ConfigError(f"{check.what}: its accelerator type is "
                        f"{result.stdout.strip() or 'unknown'}, not {check.expect}")
  for command in launch.setup:
    if subprocess.run(resolve(command)).returncode:
      raise ConfigError(f"setup failed: {shlex.join(command)}")

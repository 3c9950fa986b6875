"""What a launch runs, as commands: per sweep point a work unit of two jobs, the trainer
on every worker of a TPU VM and its evaluator (on another TPU VM or on this host), both
`tip-train` with the same config arguments and one workdir.

Both launchers build the same `Plan`; `--dry_run` prints it (`describe`) and stops, so
what is printed is exactly what would run. Building it reads the config file and checks
every job's config as `tip-train` will parse it, and touches nothing outside this machine.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shlex
import tempfile
from typing import Any, Sequence

from absl import flags, logging
from ml_collections import config_flags

from launch.topology import Topology
from tip_jax.errors import ConfigError
from tip_jax.experiment.config import field_block, load_config, load_sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]
THIS_HOST = "this host"
_ARCHIVE = pathlib.Path(tempfile.gettempdir()) / "tip_jax_src.tar.gz"


@dataclasses.dataclass(frozen=True)
class Options:
  """What the launchers' flags say (`launch/common.py` defines them)."""

  config: str                       # "configs/tip.py:sd15", relative to the checkout
  workdir: str                      # a sweep's units get WORKDIR/<unit name>
  topology: Topology
  tpus: tuple[str, ...]             # one existing TPU VM per work unit, for its trainer
  zone: str = ""                    # "" = gcloud's configured default
  project: str = ""
  sweep: str = ""                   # a sweep function of the config file; "" = one unit
  overrides: tuple[str, ...] = ()   # --config.FIELD=VALUE, given to every job
  eval_tpus: tuple[str, ...] = ()   # one per work unit, or none: evaluators on this host
  remote_dir: str = "tip_jax"       # the checkout on the TPU VMs (from the login directory)
  remote_python: str = "python3"
  local_python: str = "python3"     # runs evaluators on this host
  setup: bool = False               # copy this checkout to the TPU VMs and pip-install it


@dataclasses.dataclass(frozen=True)
class Job:
  role: str                         # "trainer" | "evaluator"
  where: str                        # a TPU VM's name, or THIS_HOST
  tip_args: tuple[str, ...]         # tip-train's arguments
  command: tuple[str, ...]          # what runs them from here


@dataclasses.dataclass(frozen=True)
class WorkUnit:
  name: str                         # "3_no_params", the last part of a sweep unit's workdir
  spec: str                         # the config spec of this point
  workdir: str
  config_args: tuple[str, ...]      # --config, --workdir, overrides: the same in both jobs
  jobs: tuple[Job, ...]


@dataclasses.dataclass(frozen=True)
class Check:
  """A command run before anything starts; `expect`, when set, is its whole output."""

  what: str
  command: tuple[str, ...]
  expect: str = ""


@dataclasses.dataclass(frozen=True)
class Plan:
  header: str
  checks: tuple[Check, ...]
  setup: tuple[tuple[str, ...], ...]
  units: tuple[WorkUnit, ...]


def _value(value: Any) -> str:
  """A value as `--config.FIELD=` takes it (ml_collections' parsers: tuples as literals)."""
  return value if isinstance(value, str) else repr(value)


def _override_flags(overrides: dict[str, Any]) -> list[str]:
  for key, value in overrides.items():
    if isinstance(value, dict):
      raise ConfigError(f"sweep value for {key!r} is a dict: name its fields ({key}.FIELD)")
  return [f"--config.{key}={_value(value)}" for key, value in overrides.items()]


def _parsed_config(spec: str, override_flags: Sequence[str]):
  """The config `tip-train --config=SPEC *override_flags` runs with, parsed the same way
  (ml_collections' override parsers, config locked)."""
  config = load_config(spec)
  for arg in override_flags:
    field_block(config, arg[len("--config."):].partition("=")[0])
  argv = ["tip-train", *override_flags]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_dict("config", config, flag_values=values,
                                           sys_argv=argv, lock_config=True)
  try:
    values(argv)
  except flags.Error as e:
    raise ConfigError(f"{spec}: {str(e).splitlines()[0]}") from None
  return holder.value


def job_config(job: Job):
  """The config a job's `tip-train` arguments give: what the tests compare."""
  spec = next(a.split("=", 1)[1] for a in job.tip_args if a.startswith("--config="))
  return _parsed_config(spec, [a for a in job.tip_args if a.startswith("--config.")])


def _label(base_arg: str, spec: str, overrides: dict[str, Any]) -> str:
  base = set(filter(None, base_arg.split(",")))
  added = [p for p in spec.partition(":")[2].split(",") if p and p not in base]
  words = added + [f"{key}={_value(value)}" for key, value in overrides.items()]
  return re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(words)) or "base"


def _gcloud(options: Options, verb: str, target: str, *args: str) -> tuple[str, ...]:
  where = [f"--zone={options.zone}"] * bool(options.zone)
  where += [f"--project={options.project}"] * bool(options.project)
  return ("gcloud", "compute", "tpus", "tpu-vm", verb, target, *where, *args)


def _on_every_worker(options: Options, tpu: str, shell: str) -> tuple[str, ...]:
  return _gcloud(options, "ssh", tpu, "--worker=all", f"--command={shell}")


def _tip_train(options: Options, where: str, tip_args: Sequence[str]) -> tuple[str, ...]:
  if where == THIS_HOST:
    return (options.local_python, "-m", "tip_jax.main", *tip_args)
  shell = (f"cd {shlex.quote(options.remote_dir)} && {shlex.quote(options.remote_python)} "
           f"-m tip_jax.main {shlex.join(tip_args)}")
  return _on_every_worker(options, where, shell)


def _one_per_unit(names: Sequence[str], units: int, flag: str) -> None:
  if len(names) != units:
    raise ConfigError(f"--{flag} names {len(names)} TPU VM(s) for {units} work unit(s): "
                      "give one per work unit")


def _setup(options: Options, vms: Sequence[str]) -> list[tuple[str, ...]]:
  """This checkout's HEAD onto every worker of `vms`, installed with `jax[tpu]`."""
  target = options.remote_dir if options.remote_dir.startswith(("/", ".")) else (
      f"./{options.remote_dir}")
  install = (f"mkdir -p {shlex.quote(options.remote_dir)} && tar -xzf {_ARCHIVE.name} -C "
             f"{shlex.quote(options.remote_dir)} && {shlex.quote(options.remote_python)} -m pip "
             f"install -e {shlex.quote(target + '[tpu]')}")
  commands = [("git", "-C", str(ROOT), "archive", "--format=tar.gz", f"--output={_ARCHIVE}",
               "HEAD")]
  for vm in vms:
    commands.append(_gcloud(options, "scp", str(_ARCHIVE), f"{vm}:{_ARCHIVE.name}",
                            "--worker=all"))
    commands.append(_on_every_worker(options, vm, install))
  return commands


def build(options: Options) -> Plan:
  path, _, base_arg = options.config.partition(":")
  if pathlib.Path(path).is_absolute() or not (ROOT / path).is_file():
    raise ConfigError(f"{path}: not a config file of this checkout ({ROOT}), which the TPU "
                      "VMs run from")
  forwarded = list(options.overrides)
  for arg in forwarded:
    if not arg.startswith("--config."):
      raise ConfigError(f"{arg!r}: only --config.FIELD=VALUE overrides follow '--'")
  if not options.workdir.startswith("gs://"):
    logging.warning("--workdir %s is not in a GCS bucket: every worker of the TPU VMs and "
                    "the evaluators must see it as one shared folder", options.workdir)
  points = load_sweep(options.config, options.sweep) if options.sweep else [
      (options.config, {})]
  _one_per_unit(options.tpus, len(points), "tpu")
  if options.eval_tpus:
    _one_per_unit(options.eval_tpus, len(points), "eval_tpu")
  eval_where = options.eval_tpus or (THIS_HOST,) * len(points)

  units = []
  for index, ((spec, overrides), tpu, evaluator) in enumerate(
      zip(points, options.tpus, eval_where), start=1):
    override_flags = _override_flags(overrides) + forwarded
    _parsed_config(spec, override_flags)  # fails here, not on the pod
    name = f"{index}_{_label(base_arg, spec, overrides)}" if options.sweep else "base"
    workdir = f"{options.workdir.rstrip('/')}/{name}" if options.sweep else options.workdir
    config_args = (f"--config={spec}", f"--workdir={workdir}", *override_flags)
    trainer = ("--mode=train", *config_args, "--distributed")
    evaluate = ("--mode=eval", *config_args) + ("--distributed",) * (evaluator != THIS_HOST)
    units.append(WorkUnit(name, spec, workdir, config_args, (
        Job("trainer", tpu, trainer, _tip_train(options, tpu, trainer)),
        Job("evaluator", evaluator, evaluate, _tip_train(options, evaluator, evaluate)))))

  checks = [Check(f"TPU VM {tpu} is a {options.topology.name}",
                  _gcloud(options, "describe", tpu, "--format=value(acceleratorType)"),
                  options.topology.accelerator_type) for tpu in options.tpus]
  if not options.eval_tpus:
    checks.append(Check("this host runs tip_jax (--local_python)",
                        (options.local_python, "-c", "import jax, tip_jax.main")))
  sweep = f"sweep {options.sweep}() of " if options.sweep else ""
  header = (f"{len(units)} work unit(s) from {sweep}{options.config} on "
            f"{options.topology}, each a trainer and an evaluator sharing a workdir")
  vms = list(dict.fromkeys(options.tpus + options.eval_tpus))
  return Plan(header, tuple(checks),
              tuple(_setup(options, vms)) if options.setup else (), tuple(units))


def describe(plan: Plan) -> str:
  """The plan as a shell script of the commands the launcher runs (jobs in parallel)."""
  lines = [f"# {plan.header}", "# checks: each must succeed, with the output shown"]
  lines += [f"{shlex.join(c.command)}" + (f"  # expect {c.expect}" if c.expect else "")
            for c in plan.checks]
  if plan.setup:
    lines += ["# setup: this checkout onto every worker"]
    lines += [shlex.join(command) for command in plan.setup]
  for unit in plan.units:
    lines.append(f"# work unit {unit.name}: {unit.spec}, workdir {unit.workdir}")
    for job in unit.jobs:
      where = THIS_HOST if job.where == THIS_HOST else f"every worker of TPU VM {job.where}"
      lines += [f"# {job.role} on {where}", f"{shlex.join(job.command)} &"]
  lines.append("wait")
  return "\n".join(lines)

"""The training loop: `experiment.setup` → data → state (fresh or resumed) → compiled
step → loop.

Read top to bottom. Everything numeric happens in `tip_jax.train.step` (and the loss
the config's task names, `tip_jax.experiment.tasks`: TIP, or pretraining the backbone's
VAE or UNet); this file moves data, keeps time, writes metrics, sample grids and
checkpoints, and stops cleanly on SIGTERM or TPU preemption. However it ends (done,
SIGTERM, an error, Ctrl-C), a save in flight lands and the data workers are stopped;
what stops a run is one line (README "When things go wrong").
"""

from __future__ import annotations

import datetime
import errno
import os
import signal
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from tqdm import tqdm

from tip_jax.data import pipeline as data_lib
from tip_jax.errors import TrainingError
from tip_jax.experiment import checkpoint as ckpt_lib
from tip_jax.experiment import distributed
from tip_jax.experiment import loss as loss_lib
from tip_jax.experiment import setup as setup_lib
from tip_jax.experiment import state as state_lib
from tip_jax.experiment import summaries
from tip_jax.train import samples
from tip_jax.train import step as step_lib

_DISK_REFUSED = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


class _StopFlag:
  """Set by SIGTERM; the loop saves the current step and returns (exit status 0).

  A context manager: the previous SIGTERM handler is back once training returns.
  """

  def __enter__(self) -> _StopFlag:
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d: will save and stop at the next log or checkpoint step", signum)
    self.requested = True

  def agreed(self) -> bool:
    """True on every process once any process got the signal (all must save together);
    a collective on multi-process runs, so the loop asks only at log/checkpoint steps."""
    return distributed.any_process(self.requested)


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Every config leaf as `a.b.c: value` (TensorBoard's hparams are flat scalars)."""
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


class _ProfileWindow:
  """A `jax.profiler` trace of `steps` steps from step `first` on (process 0), written
  under `workdir/plugins/profile` for TensorBoard's profile tab; 0 steps: none."""

  def __init__(self, workdir: str, first: int, steps: int):
    self.workdir, self.first, self.last = workdir, first, first + steps
    self.enabled = steps > 0 and jax.process_index() == 0
    self.tracing = False

  def __call__(self, step: int) -> None:
    if self.enabled and not self.tracing and step == self.first:
      jax.profiler.start_trace(self.workdir)
      self.tracing = True
    elif self.tracing and step >= self.last:
      self.stop()

  def stop(self) -> None:
    if self.tracing:
      jax.profiler.stop_trace()
      self.tracing = False
      logging.info("profile of steps %d-%d written under %s", self.first, self.last,
                   self.workdir)


def _log_progress(step: int, total: int, steps_per_s: float) -> None:
  """The log's view of the progress bar (pods' logs have no terminal)."""
  eta = (str(datetime.timedelta(seconds=round((total - step) / steps_per_s)))
         if steps_per_s > 0 else "?")
  logging.info("step %d/%d (%.1f%%), %.3g steps/s, ETA %s", step, total, 100 * step / total,
               steps_per_s, eta)


def _log_compiled(compiled: Any, seconds: float) -> None:
  logging.info("train step compiled in %.1f s", seconds)
  memory = compiled.memory_analysis()
  if memory is not None:
    logging.info("per-device memory: arguments %.1f MiB, outputs %.1f MiB, temporaries "
                 "%.1f MiB", memory.argument_size_in_bytes / 2**20,
                 memory.output_size_in_bytes / 2**20, memory.temp_size_in_bytes / 2**20)


def train(config: ml_collections.ConfigDict, workdir: str,
          devices: Sequence[jax.Device] | None = None) -> state_lib.TrainState:
  """Trains to `config.total_steps` (resuming from `workdir`), returns the final state.

  `devices` (default: all) is what the config's mesh spans.
  """
  exp = setup_lib.setup(config, workdir, devices)
  with _StopFlag() as stop:
    data_iter = exp.data_iterator()
    try:
      mngr = exp.checkpoint_manager()  # also removes what unfinished saves left
      try:
        state = _train(exp, stop, data_iter, mngr)
      except BaseException as error:
        # A save in flight still lands; one the disk refused is the cause to report.
        ckpt_lib.close(mngr, exp.abstract_state(), error)
        _raise_if_disk_refused(error, workdir)
        raise
      ckpt_lib.close(mngr, state)
      return state
    finally:
      data_lib.close(data_iter)  # stops Grain's worker processes, frees their shared memory


def _raise_if_disk_refused(error: BaseException, workdir: str) -> None:
  """A write outside a checkpoint save (a sample grid, say) that a full or
  read-only disk refused is one line too: the disk is at fault, not tip_jax."""
  if isinstance(error, OSError) and error.errno in _DISK_REFUSED:
    where = f"writing {error.filename}" if error.filename else f"a write in {workdir}"
    raise TrainingError(f"{where} failed: {os.strerror(error.errno).lower()}") from error


class _SkipStreak:
  """Non-finite (skipped) steps in a row, from the metrics' running `skipped_steps`."""

  def __init__(self, skipped: int):
    self.skipped, self.length = skipped, 0

  def update(self, values: list[dict]) -> None:
    for h in values:
      skipped = int(h["skipped_steps"])
      self.length = self.length + 1 if skipped > self.skipped else 0
      self.skipped = skipped


def _stuck(step: int, length: int, config: ml_collections.ConfigDict,
           checkpoint: int | None) -> str:
  kept = f"checkpoint step {checkpoint} is kept" if checkpoint else "no checkpoint yet"
  return (f"steps {step - length + 1}-{step}: {length} steps in a row had a non-finite loss "
          f"or gradient (max_consecutive_skips={config.max_consecutive_skips}); the run is "
          f"stuck: lower optim.lr or check the data ({kept})")


def _train(exp: setup_lib.Experiment, stop: _StopFlag, data_iter: Any,
           mngr: ocp.CheckpointManager) -> state_lib.TrainState:
  config, workdir = exp.config, exp.workdir
  # ---- State: the newest readable checkpoint (unreadable ones are set aside), or fresh.
  fresh_data = data_iter.get_state() if mngr.all_steps() else None
  found = ckpt_lib.read_newest(
      mngr, lambda s: ckpt_lib.restore(mngr, s, exp.abstract_state(), data_iter),
      fall_back=True, set_aside=True)
  if found is not None:
    logging.info("resuming from step %d in %s", found[0], ckpt_lib.directory(workdir))
    state = found[1]
  else:
    if fresh_data is not None:
      data_iter.set_state(fresh_data)  # the failed restores may have moved it
    state = exp.init_state()
  step = int(jax.device_get(state.step))
  streak = _SkipStreak(int(jax.device_get(state.skipped)))

  # ---- The step, compiled once ahead of time.
  step_fn = step_lib.make_train_step(exp.task, config, exp.tx)
  writer = summaries.SummaryWriter(workdir, write=jax.process_index() == 0)
  writer.write_hparams(flat_hparams(config))
  profile = _ProfileWindow(workdir, step + config.log_every_steps, config.profile_steps)
  grids = samples.GRIDS[exp.task.name](exp, writer) if config.sample_every_steps else None
  # On a terminal (process 0 only) a progress bar with the latest loss; logs go on as usual.
  bar = tqdm(total=config.total_steps, initial=step, desc="training", unit="step",
             disable=None if jax.process_index() == 0 else True)
  compiled = None
  history: list[dict] = []
  data_counts: dict[str, float] = {}
  interval_start, interval_step = time.perf_counter(), step

  # ---- The loop.
  while step < config.total_steps:
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      local, stats = loss_lib.host_batch(data_lib.next_batch(data_iter), exp.task.device_keys)
      for k, v in stats.items():
        data_counts[k] = data_counts.get(k, 0) + float(v)
      batch = exp.global_batch(local)
      if compiled is None:
        start = time.perf_counter()
        batch_sh = jax.tree.map(lambda x: x.sharding, batch)
        compiled = jax.jit(step_fn, in_shardings=(exp.state_shardings, exp.frozen_shardings,
                                                  batch_sh),
                           out_shardings=(exp.state_shardings, None), donate_argnums=(0,)
                           ).lower(state, exp.frozen, batch).compile()
        _log_compiled(compiled, time.perf_counter() - start)
        if jax.process_count() > 1:
          # Hosts finish compiling at different times; gloo gives a late peer only ~30 s
          # at the first collective, the coordination service's barrier waits longer.
          ocp.multihost.sync_global_processes("tip_train_step_compiled", timeout=3600)
        interval_start = time.perf_counter()
      state, metrics = compiled(state, exp.frozen, batch)
      step += 1
    history.append(metrics)
    bar.update()
    profile(step)

    if step % config.log_every_steps == 0 or step == config.total_steps:
      values = jax.device_get(history)
      elapsed = time.perf_counter() - interval_start
      scalars = {k: float(np.mean([h[k] for h in values])) for k in values[0]}
      scalars["skipped_steps"] = float(values[-1]["skipped_steps"])
      scalars["steps_per_s"] = (step - interval_step) / elapsed
      scalars["images_per_s"] = scalars["steps_per_s"] * config.batch_size
      scalars.update(data_counts)
      writer.write_scalars(step, scalars)
      _log_progress(step, config.total_steps, scalars["steps_per_s"])
      bar.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
      history, interval_start, interval_step = [], time.perf_counter(), step
      ckpt_lib.raise_if_save_failed(mngr, state)  # a full disk stops the run here
      streak.update(values)
      if config.max_consecutive_skips and streak.length > config.max_consecutive_skips:
        raise TrainingError(_stuck(step, streak.length, config, mngr.latest_step()))

    if grids and (step % config.sample_every_steps == 0 or step == config.total_steps):
      grids(step, state.ema_params)
      interval_start = time.perf_counter()  # steps/s counts training only

    at_save = step % config.checkpoint_every_steps == 0 or step == config.total_steps
    at_log = step % config.log_every_steps == 0
    stopping = mngr.reached_preemption(step) or ((at_log or at_save) and stop.agreed())
    if at_save or stopping:
      ckpt_lib.save(mngr, step, state, data_iter, config, force=True)
    if stopping:
      logging.warning("stopping at step %d (checkpoint saved)", step)
      break

  bar.close()
  profile.stop()
  ckpt_lib.wait(mngr, state)
  if step >= config.total_steps:
    ckpt_lib.mark_complete(workdir, step)
  writer.flush()
  return state

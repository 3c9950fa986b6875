"""Checkpoints in `workdir/checkpoints`, shared by the trainer, the evaluator and the restorer.

One Orbax `CheckpointManager`; each step holds one item per role, so a job restores
only what it needs (the restorer and the evaluator: `ema_params`, onto their own
devices; the trainer: everything):
  params       the params being trained: the ControlNet's (E' and fusion convs included),
               or, for a pretraining run (`config.task` vae | unet), the VAE's or UNet's
  ema_params   their exponential moving average: what inference uses
  opt_state    AdamW's state, with `step` and `skipped` (the counters of `TrainState`)
  data         the Grain iterator's position (one JSON file per process)
  config       the experiment config as JSON, so a checkpoint alone rebuilds its models
The frozen backbone is referenced by the config (`model.backbone` folder, or a random
backbone that is a function of the seed), never re-saved. After the final save the
trainer writes `checkpoints/train_complete` holding the last step; `checkpoints()`
is how an evaluator follows a running trainer and knows when to stop.
`open_read_only` opens a finished or running run's checkpoints for reading; the readers
that rebuild a run's models from them are in `runs`.

Faults (README "When things go wrong"): every job reads through `read_newest`, which
names the step and the file that cannot be read, and falls back to an older step (the
trainer sets the bad one aside as `<step>.corrupt`, the evaluator skips it) or stops
with one line (the restorer, `tip-export-backbone`). A save the operating system
refuses (full disk, permissions) stops training with one line naming the step, the
folder and the size of a checkpoint; the earlier checkpoints stay, and the unfinished
folder is removed when the next trainer opens the folder (`checkpoint_files`).

Checkpoints written before this layout (one `state` item) are not read: nothing had
been released with it.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import flax.linen as nn
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from tip_jax.errors import CheckpointError
from tip_jax.experiment import checkpoint_files as files
from tip_jax.experiment import distributed
from tip_jax.experiment import sharding
from tip_jax.experiment import state as state_lib
from tip_jax.models import params as params_lib

ITEMS = ("params", "ema_params", "opt_state", "data", "config")
COMPLETE = "train_complete"
T = TypeVar("T")


def directory(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def manager(workdir: str, config: ml_collections.ConfigDict | None = None,
            read_only: bool = False) -> ocp.CheckpointManager:
  """The manager for `workdir`; a config sets the retention and async policy.

  A writable one (the trainer's: one per workdir) first removes the folders of saves
  that never completed, logging each.
  """
  if not read_only and jax.process_index() == 0:
    files.remove_unfinished(directory(workdir))
  if read_only:  # before the options: they log one of the two notices
    files.quiet_read_only_notices()
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints if config else None,
      keep_period=(config.keep_every_steps or None) if config else None,
      enable_async_checkpointing=bool(config.async_checkpoints) if config else False,
      read_only=read_only, create=not read_only)
  return _manager(directory(workdir), options)


def _manager(root: str, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(root, item_names=ITEMS, options=options,
                               item_handlers={"data": grain.checkpoint.CheckpointHandler()})


def _counters(state: state_lib.TrainState) -> dict:
  return {"opt_state": state.opt_state, "step": state.step, "skipped": state.skipped}


def save(mngr: ocp.CheckpointManager, step: int, state: state_lib.TrainState,
         data_iterator: Any, config: ml_collections.ConfigDict, force: bool = False) -> bool:
  """Starts saving `step` (in the background when the config's saves are async).

  A write the operating system refuses (no space left, permission denied, ...) raises
  `CheckpointError`: one line with the step, the folder and a checkpoint's size. An
  async save's failure is raised by the next `save` or by `wait`, for its own step.
  """
  wait(mngr, state)
  try:
    _check_writable(mngr.directory)
    return mngr.save(step, force=force, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        ema_params=ocp.args.StandardSave(state.ema_params),
        opt_state=ocp.args.StandardSave(_counters(state)),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        config=ocp.args.JsonSave(config.to_dict())))
  except Exception as e:
    _raise_if_refused(e, step, mngr, state)
    raise


def _check_writable(folder: epath.Path) -> None:
  """Writes and deletes an empty file in `folder`: a folder that refuses writes raises
  here, at once (Orbax, failing to create the step's folder, would wait five minutes
  for it and then time out)."""
  probe = epath.Path(folder) / f".tip_write_check.{jax.process_index()}"
  probe.write_text("")
  probe.unlink()


def wait(mngr: ocp.CheckpointManager, state: state_lib.TrainState) -> None:
  """Blocks until the save in flight is on disk; a refused write raises as in `save`."""
  step = mngr.latest_step()  # the step in flight, if any, is the newest one
  try:
    mngr.wait_until_finished()
  except Exception as e:
    _raise_if_refused(e, step, mngr, state)
    raise


def raise_if_save_failed(mngr: ocp.CheckpointManager, state: state_lib.TrainState) -> None:
  """Raises, as `save` does, the failure of an async save that has ended; never waits
  for one in flight. The trainer asks at log steps: a full disk stops the run there,
  not a checkpoint interval later, after more steps and sample grids written to it."""
  if not mngr.is_saving_in_progress():
    wait(mngr, state)


def _raise_if_refused(error: Exception, step: int | None, mngr: ocp.CheckpointManager,
                      state: state_lib.TrainState) -> None:
  """`state` may be abstract (shapes only): it gives the size of a checkpoint."""
  why = files.write_failure(error)
  if why is not None:
    size = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves((state.params, state.ema_params, state.opt_state)))
    raise CheckpointError(f"checkpoint save at step {step} failed: {why} in {mngr.directory} "
                          f"(a checkpoint here takes {files.size_text(size)})") from error


def close(mngr: ocp.CheckpointManager, state: state_lib.TrainState,
          error: BaseException | None = None) -> None:
  """Closes `mngr` once a save in flight is on disk; a refused write raises as in `save`,
  also after `error` stopped training (a full disk is then the cause to report, whatever
  it broke first). Any other failure of that save after `error` is logged on one line
  (nothing when it is `error`'s own cause: the save was what failed)."""
  step = mngr.latest_step()  # the step in flight, if any, is the newest one
  try:
    mngr.close()
  except Exception as e:
    if error is not None and e is error.__cause__:
      return
    _raise_if_refused(e, step, mngr, state)
    if error is None:
      raise
    logging.warning("while stopping, a checkpoint save failed too: %s",
                    files.one_line(str(e)) or type(e).__name__)


def read_newest(mngr: ocp.CheckpointManager, read: Callable[[int], T],
                steps: Iterable[int] | None = None, items: Sequence[str] = ITEMS, *,
                fall_back: bool, set_aside: bool = False) -> tuple[int, T] | None:
  """`(step, read(step))` for the newest of `steps` (default: all of `mngr`'s) whose
  `items` can be read: how the trainer, the evaluator and the restorer read checkpoints.

  A step that cannot be read (a file cut short, missing or garbled; or its folder gone,
  deleted by retention while an evaluator waited): with `fall_back`, one warning naming
  the step and the file, the folder renamed to `<step>.corrupt` when `set_aside` (the
  trainer's choice: Orbax's retention then ignores it and a person can look at it;
  nothing is deleted), and the next older step is tried; None when none is left.
  Without `fall_back`: `CheckpointError`, one line. Any other error (arrays whose shapes
  are not the config's, ...) propagates: an older step would fail the same way.
  """
  root = epath.Path(mngr.directory)
  candidates = sorted(mngr.all_steps() if steps is None else steps, reverse=True)
  for i, step in enumerate(candidates):
    folder = root / str(step)
    value, problem = _read_step(read, step, folder, items)
    if not distributed.any_process(problem is not None):
      return step, value
    message = (f"checkpoint step {step} in {root} cannot be read: "
               f"{problem or 'it failed on another process'}")
    if not fall_back:
      raise CheckpointError(message)
    if set_aside and folder.exists():
      if jax.process_index() == 0:
        message += f"; moved to {os.path.basename(files.set_aside(str(folder)))}"
      ocp.multihost.sync_global_processes(f"tip_set_aside_{step}")
      mngr.reload()
    older = candidates[i + 1:]
    logging.warning("%s; %s", message, f"trying step {older[0]}" if older else "skipped")
  return None


def _read_step(read: Callable[[int], T], step: int, folder: epath.Path,
               items: Sequence[str]) -> tuple[T | None, str | None]:
  """(read(step), None), or (None, what could not be read)."""
  if not folder.is_dir():
    return None, "its folder is gone (deleted by retention?)"
  problem = files.scan(str(folder), items)
  if problem is not None:
    return None, problem
  try:
    return read(step), None
  except Exception as e:
    if not folder.is_dir():
      return None, "its folder was deleted while it was read (retention?)"
    problem = files.cause(e, str(folder), items)
    if problem is None:
      raise
    return None, problem


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: state_lib.TrainState,
            data_iterator: Any) -> state_lib.TrainState:
  """The whole TrainState (placed as `abstract_state`'s shardings say); the iterator
  continues in place."""
  a = abstract_state
  restored = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(a.params),
      ema_params=ocp.args.StandardRestore(a.ema_params),
      opt_state=ocp.args.StandardRestore(_counters(a)),
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  counters = restored["opt_state"]
  return state_lib.TrainState(step=counters["step"], params=restored["params"],
                              opt_state=counters["opt_state"],
                              ema_params=restored["ema_params"], skipped=counters["skipped"])


def mark_complete(workdir: str, step: int) -> None:
  if jax.process_index() == 0:
    epath.Path(directory(workdir), COMPLETE).write_text(str(step))


def is_complete(workdir: str) -> bool:
  return epath.Path(directory(workdir), COMPLETE).exists()


def checkpoints(workdir: str, after_step: int | None = None, poll_s: float = 30.0,
                timeout_s: float | None = None) -> Iterator[int]:
  """Finished checkpoint steps of `workdir`, in order, as they appear; ends once
  `train_complete` is written and every step up to it was yielded, or when no new
  checkpoint came for `timeout_s` seconds (None = wait forever).

  What an evaluator job polls with; a step that retention deletes before it is
  reached is skipped.
  """
  mngr = None  # opened once the trainer has created the folder
  last, waited_since = after_step, time.monotonic()
  while True:
    if mngr is None and epath.Path(directory(workdir)).exists():
      mngr = manager(workdir, read_only=True)
    complete = is_complete(workdir)  # read before listing: no step can be missed
    steps = []
    if mngr is not None:
      mngr.reload()
      steps = sorted(s for s in mngr.all_steps() if last is None or s > last)
    for step in steps:
      yield step
      last, waited_since = step, time.monotonic()
    if complete and not steps:
      return
    if not steps:
      if timeout_s is not None and time.monotonic() - waited_since > timeout_s:
        logging.warning("no new checkpoint in %s for %.0f s; stopping", directory(workdir),
                        timeout_s)
        return
      time.sleep(poll_s)


def _checkpoint_root(path: str) -> tuple[str, int | None]:
  """A workdir, its `checkpoints` folder, or a step folder → (root, step or None)."""
  p = epath.Path(path)
  if not p.exists():
    raise CheckpointError(f"{path}: no such checkpoint folder")
  if (p / "checkpoints").is_dir():
    return str(p / "checkpoints"), None
  if (p / "config").is_dir() and p.name.isdigit():
    return str(p.parent), int(p.name)
  return str(p), None


def read_config(mngr: ocp.CheckpointManager, step: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])


def load_params(mngr: ocp.CheckpointManager, step: int, module: nn.Module,
                item: str = "ema_params", shardings: Any = None) -> dict:
  """One params item of `step` alone (no optimizer state is read), shaped as `module`'s
  params and placed as `shardings` say (default: the first local device)."""
  shapes = params_lib.param_shapes(module)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, shapes)
  folder = epath.Path(mngr.directory) / str(step) / item
  if not folder.exists():
    raise CheckpointError(f"{folder.parent}: no {item} item (a checkpoint from before "
                          "per-role items, or not a TIP checkpoint)")
  return mngr.restore(step, args=ocp.args.Composite(**{
      item: ocp.args.StandardRestore(sharding.abstract(shapes, shardings))}))[item]


def open_read_only(path: str, step: int | None) -> tuple[ocp.CheckpointManager, int]:
  """The read-only manager of a run's checkpoints and the step to read (default: latest)."""
  root, named_step = _checkpoint_root(path)
  step = named_step if step is None else step
  files.quiet_read_only_notices()
  mngr = _manager(root, ocp.CheckpointManagerOptions(read_only=True, create=False))
  steps = mngr.all_steps()
  if not steps:
    raise CheckpointError(f"{path}: no TIP checkpoints in {root}")
  step = mngr.latest_step() if step is None else step
  if step not in steps:
    raise CheckpointError(f"{path}: no checkpoint for step {step} (have {sorted(steps)})")
  return mngr, int(step)

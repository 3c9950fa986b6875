"""The Grain input pipeline: records -> clean crops, both prompts, degradation parameters.

    it = make_iterator(DataConfig(source="demo", resolution=64, max_zoom=4.0), batch_size=8,
                       seed=0, degrade_config=DegradeConfig(size=(64, 64)),
                       tokenizer=bundled_tokenizer())
    batch = next(it)          # per-host numpy; the trainer makes global arrays of it

Stages: this process's shard of record indices -> shuffle (reshuffled every epoch) ->
repeat forever -> per example: read, decode, crop, flip, channel order, caption and
dropout, degradation parameters and restoration prompt -> fold skipped records' counts
into the next example -> batch -> CLIP-tokenize both prompts -> `mp_prefetch` workers.
Every random choice for an example comes from (seed, epoch * len(source) + record
index) alone, so any host, worker count or restart agrees on it.

A batch of B examples (all numpy):
    image              uint8 (B, R, R, 3), the clean crop
    semantic_ids       int32 (B, 77)   c_s: a caption, "" with prob. semantic_dropout
    restoration_ids    int32 (B, 77)   c_r: names the sampled degradation
    semantic_prompt, restoration_prompt   str (B,), for image grids (keep them off device)
    index              int64 (B,)      record index in the source
    degrade            the `DegradeParams` leaves as a nested dict with a batch axis;
                       `degrade.params_from_tree(batch["degrade"], degrade_config)`
                       rebuilds it
    stats              {event: int32 (B,)} for `images.EVENTS`: what each example's own
                       file needed (conversion, upscaling, ...) plus the skips since the
                       previous example of its stream; summed over batches = all events

Workers: `num_workers` Grain processes. They ignore SIGINT and SIGTERM (a Ctrl-C or a
scheduler signals the whole process group; the trainer saves, then stops them with
`close(iterator)`), and exit when the trainer is gone (SIGKILL, out of memory) instead
of living on. A worker that dies turns the next `next_batch` into a one-line
`DataError`, and `close` frees the shared memory it left.

Checkpointing: the iterator's state goes into the trainer's Orbax manager with Grain's
handler, which writes one JSON file per process (`process_<i>-of-<n>.json`):

    mngr = ocp.CheckpointManager(directory, item_names=("state", "data"))
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)))
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(iterator)))   # `iterator` continues in place
"""

from __future__ import annotations

import collections
import functools
import gc
import os
import re
import secrets
import signal
import threading
import time
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import grain
import jax
import numpy as np

from tip_jax import degrade
from tip_jax.data import images, sources
from tip_jax.data.config import DataConfig
from tip_jax.errors import ConfigError, DataError
from tip_jax.models import tokenizer as tokenizer_lib

_AUGMENT_STREAM = 0x617567   # separates crop/flip/caption draws from the degradation draws
# DataConfig.channel_shuffle's orders: every permutation of RGB but the identity.
_CHANNEL_ORDERS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
_MAX_CONSECUTIVE_SKIPS = 1000
_SHM_DIR = "/dev/shm"  # POSIX shared memory as files (Linux)
_SHM_RELEASE_S = 5.0
_WORKER_DIED = re.compile(r"Worker process was terminated unexpectedly with exit code (-?\d+)")


class _Skipped:
  """Stands in for a record that gave no example; `_CarrySkips` folds it away."""

  def __init__(self, reason: str):
    self.reason = reason


class _Examples:
  """(stream position, record index) -> one example dict, or `_Skipped`."""

  def __init__(self, source: sources.Source, config: DataConfig, seed: int,
               degrade_config: degrade.DegradeConfig, shard_len: int):
    self.source, self.config, self.seed = source, config, seed
    self.degrade_config, self.shard_len = degrade_config, shard_len

  def __call__(self, position: int, record_index: int) -> dict[str, Any] | _Skipped:
    config = self.config
    key = (position // self.shard_len) * len(self.source) + int(record_index)
    # Draws are appended, never reordered: earlier fields keep their values.
    draws = np.random.default_rng([self.seed, key, _AUGMENT_STREAM]).random(8)
    flip, dropout, pick, shuffle, order = draws[3:]
    try:
      record = self.source[int(record_index)]
      image, events = images.crop(record["image"], config.resolution, draws[:3],
                                  max_zoom=config.max_zoom, max_pixels=config.max_pixels)
    except images.BadData as e:
      return _Skipped(e.reason)
    if config.flip and flip < 0.5:
      image = np.ascontiguousarray(image[:, ::-1])
    if shuffle < config.channel_shuffle:
      image = np.ascontiguousarray(image[..., _CHANNEL_ORDERS[int(order * len(_CHANNEL_ORDERS))]])
    captions = record["captions"]
    caption = captions[int(pick * len(captions))] if captions else ""
    params, restoration = degrade.sample_params(self.seed, 1, self.degrade_config, indices=[key])
    return {"image": image,
            "semantic_prompt": np.str_("" if dropout < config.semantic_dropout else caption),
            "restoration_prompt": np.str_(restoration[0]),
            "index": np.int64(record_index),
            "degrade": degrade.params_to_tree(params),
            "stats": {name: np.int32(name in events) for name in images.EVENTS}}


class _CarrySkipsIterator(grain.DatasetIterator):
  """Passes examples on; a skipped record's event rides on the next example.

  Skips are folded within one `__next__`, so between calls nothing is pending and the
  state is the parent's: a restored iterator loses no counts.
  """

  def __next__(self) -> dict[str, Any]:
    pending = collections.Counter()
    for _ in range(_MAX_CONSECUTIVE_SKIPS):
      element = next(self._parent)
      if isinstance(element, _Skipped):
        pending[element.reason] += 1
        continue
      for name, count in pending.items():
        element["stats"][name] += np.int32(count)
      return element
    raise sources.DataError(f"{_MAX_CONSECUTIVE_SKIPS} records in a row were unusable "
                            f"({dict(pending)}); check the data source")

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state)


class _CarrySkips(grain.IterDataset):

  def __iter__(self) -> _CarrySkipsIterator:
    return _CarrySkipsIterator(self._parent.__iter__())


class _Tokenize:
  """Adds both prompts' CLIP ids to a batch (one tokenizer call per prompt kind)."""

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer

  def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
    for kind in ("semantic", "restoration"):
      batch[f"{kind}_ids"] = tokenizer_lib.tokenize(
          self.tokenizer, [str(t) for t in batch[f"{kind}_prompt"]])
    return batch


def _own_memory(batch: dict[str, Any]) -> dict[str, Any]:
  """Workers hand batches over in shared memory, which is unlinked when the last array
  viewing it is freed. Copied out here, each block is unlinked at once instead of
  whenever the caller's arrays (on CPU, JAX may alias them) and Grain's buffers are
  collected, which can be after interpreter shutdown has begun and unlinking fails
  ("leaked shared_memory objects"). One memcpy of the batch per step."""
  return jax.tree.map(np.array, batch)


def _shm_prefix(trainer_pid: int) -> str:
  """The start of the names of the shared memory blocks a trainer's workers create."""
  return f"tipw{trainer_pid}_"


def _start_worker(index: int, count: int, *, nice: int = 0) -> None:
  """Runs first in each worker process (see the module docstring); `nice` is
  `DataConfig.worker_nice`."""
  del index, count
  if nice:
    os.nice(nice)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  parent = os.getppid()
  if os.path.isdir(_SHM_DIR):
    # Grain hands batches over in shared memory blocks with random names; a worker
    # killed mid-batch leaves some behind that only its trainer can recognise (`close`).
    prefix = "/" + _shm_prefix(parent)
    shared_memory._make_filename = lambda: prefix + secrets.token_hex(8)

  def exit_when_orphaned() -> None:
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(1)

  threading.Thread(target=exit_when_orphaned, name="tip-orphan-watch", daemon=True).start()


def _worker_blocks() -> tuple[set[str], set[str]]:
  """This process's workers' shared memory blocks: all, and those this process maps."""
  prefix = _shm_prefix(os.getpid())
  blocks = {name for name in os.listdir(_SHM_DIR) if name.startswith(prefix)}
  with open("/proc/self/maps") as f:
    mapped = {os.path.basename(fields[5]) for fields in map(str.split, f)
              if len(fields) > 5 and os.path.basename(fields[5]).startswith(prefix)}
  return blocks, mapped


def close(iterator: grain.DatasetIterator) -> None:
  """Stops the iterator's worker processes and frees their shared memory: also what a
  worker killed mid-batch left behind, which nothing else would free before exit
  (Python then warns about "leaked shared_memory objects"). For the end of a job: the
  batches in flight of another iterator of this process would be freed too."""
  iterator.close()
  if not os.path.isdir(_SHM_DIR):
    return
  gc.collect()  # batches held by reference cycles (a worker's error) are let go, and
  deadline = time.monotonic() + _SHM_RELEASE_S  # Grain unlinks them on a thread
  blocks, mapped = _worker_blocks()
  while mapped and time.monotonic() < deadline:
    time.sleep(0.05)
    blocks, mapped = _worker_blocks()
  for name in blocks - mapped:  # never received: only a dead worker could have sent them
    try:
      block = shared_memory.SharedMemory(name)
    except FileNotFoundError:
      continue
    block.close()
    try:
      block.unlink()  # also unregisters it from Python's resource tracker
    except FileNotFoundError:
      # Grain's thread freed it since the listing; attaching registered it again, and a
      # block left registered is a "leaked shared_memory" warning at exit.
      resource_tracker.unregister(block._name, "shared_memory")  # pylint: disable=protected-access


def next_batch(iterator: grain.DatasetIterator) -> dict[str, Any]:
  """`next(iterator)`; a worker process that died (killed, out of memory) becomes a
  one-line `DataError` (Grain notices within a second, and raises a RuntimeError whose
  text says only "search the logs above")."""
  try:
    return next(iterator)
  except RuntimeError as e:
    died = _WORKER_DIED.search(str(e))
    if not died:
      raise
    code = int(died.group(1))
  # Raised out here, the DataError does not keep Grain's error and with it, through its
  # traceback, the batches in flight (their shared memory) alive until exit.
  how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
  hint = ": out of memory?" if code == -signal.SIGKILL else ""
  raise DataError(f"a data worker process died ({how}{hint}); the input pipeline cannot go "
                  "on without it")


def make_dataset(config: DataConfig, *, batch_size: int, seed: int,
                 degrade_config: degrade.DegradeConfig, tokenizer,
                 process_index: int | None = None,
                 process_count: int | None = None) -> grain.IterDataset:
  """The pipeline as a Grain `IterDataset` (see the module docstring); `make_iterator` iterates it.

  Each process reads records process_index, process_index + process_count, ...
  `batch_size` is the per-process batch.
  """
  if tuple(degrade_config.size) != (config.resolution, config.resolution):
    raise ConfigError(f"degrade_config.size={degrade_config.size} but data.resolution="
                     f"{config.resolution}: the parameters are drawn for the crop size")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  source = sources.open_source(config.source)
  if len(source) < process_count:
    raise sources.DataError(f"{config.source}: {len(source)} records cannot be shared by "
                            f"{process_count} processes")
  ds = grain.MapDataset.range(len(source))[process_index::process_count]
  shard_len = len(ds)
  if config.shuffle:
    ds = ds.shuffle(seed=seed % 2**32)
  ds = ds.repeat().map_with_index(_Examples(source, config, seed, degrade_config, shard_len))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=config.read_threads,
                                            prefetch_buffer_size=config.prefetch_buffer *
                                            batch_size))
  ds = _CarrySkips(ds).batch(batch_size, drop_remainder=True).map(_Tokenize(tokenizer))
  if config.num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.num_workers, per_worker_buffer_size=config.prefetch_buffer),
                        worker_init_fn=functools.partial(_start_worker,
                                                         nice=config.worker_nice)
                        ).map(_own_memory)
  return ds


def make_iterator(config: DataConfig, *, batch_size: int, seed: int,
                  degrade_config: degrade.DegradeConfig, tokenizer,
                  process_index: int | None = None,
                  process_count: int | None = None) -> grain.DatasetIterator:
  """An endless iterator of batches with `get_state()` / `set_state()` (see module docstring)."""
  return iter(make_dataset(config, batch_size=batch_size, seed=seed,
                           degrade_config=degrade_config, tokenizer=tokenizer,
                           process_index=process_index, process_count=process_count))

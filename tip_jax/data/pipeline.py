"""The Grain input pipeline: records -> clean crops, both prompts, degradation parameters.

    it = make_iterator(DataConfig(source="demo", resolution=64, max_zoom=4.0), batch_size=8,
                       seed=0, degrade_config=DegradeConfig(size=(64, 64)),
                       tokenizer=bundled_tokenizer())
    batch = next(it)          # per-host numpy; the trainer makes global arrays of it

Stages: this process's shard of record indices -> shuffle (reshuffled every epoch) ->
repeat forever -> per example: read, decode, crop, flip, caption and dropout,
degradation parameters and restoration prompt -> fold skipped records' counts into the
next example -> batch -> CLIP-tokenize both prompts -> `mp_prefetch` workers.
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
from typing import Any

import grain
import jax
import numpy as np

from tip_jax import degrade
from tip_jax.data import images, sources
from tip_jax.data.config import DataConfig
from tip_jax.errors import ConfigError
from tip_jax.models import tokenizer as tokenizer_lib

_AUGMENT_STREAM = 0x617567   # separates crop/flip/caption draws from the degradation draws
_MAX_CONSECUTIVE_SKIPS = 1000


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
    draws = np.random.default_rng([self.seed, key, _AUGMENT_STREAM]).random(6)
    flip, dropout, pick = draws[3:]
    try:
      record = self.source[int(record_index)]
      image, events = images.crop(record["image"], config.resolution, draws[:3],
                                  max_zoom=config.max_zoom, max_pixels=config.max_pixels)
    except images.BadData as e:
      return _Skipped(e.reason)
    if config.flip and flip < 0.5:
      image = np.ascontiguousarray(image[:, ::-1])
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
        num_workers=config.num_workers, per_worker_buffer_size=config.prefetch_buffer)
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

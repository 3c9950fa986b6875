"""TensorBoard event files without TensorFlow: what the trainer and the evaluator log.

CLU's default writer imports TensorFlow (about 6 s of every job's start-up, and a
250 MB dependency) only to serialise a few protos. TensorBoard's own event-file writer
and protos write the same TF2 summaries: scalars and PNG images as tensor summaries
with their plugin's metadata, and the config as hparams, which TensorBoard (and its
`EventAccumulator`, under `Tags()["tensors"]`) reads alike. The file is ours (TensorBoard's
`EventFileWriter` opens it through `tensorboard.compat.tf`, which imports TensorFlow
whenever it is installed), opened with etils' epath: local folders, and `gs://` with
gcsfs or TensorFlow installed.

Process 0 writes the file; every process logs its scalars (absl INFO), so a pod's
non-zero hosts keep their figures in their own logs.
"""

from __future__ import annotations

import io
import os
import socket
import time
from typing import Any, Mapping

import numpy as np
from absl import logging
from etils import epath
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


class SummaryWriter:
  """Scalars, uint8 images and hparams for TensorBoard under `logdir` (`write=False`:
  logging only, for processes other than 0)."""

  def __init__(self, logdir: str, write: bool = True):
    self._file = None
    if write:
      folder = epath.Path(logdir)
      folder.mkdir(parents=True, exist_ok=True)
      name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
      self._file = RecordWriter((folder / name).open("wb"))
      self._event(event_pb2.Event(file_version="brain.Event:2"))

  def _event(self, event: event_pb2.Event) -> None:
    if self._file is not None:
      event.wall_time = time.time()
      self._file.write(event.SerializeToString())

  def _add(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    self._event(event_pb2.Event(step=int(step), summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items()))
    meta = scalar_metadata.create_summary_metadata(display_name="", description="")
    self._add(step, [summary_pb2.Summary.Value(
        tag=tag, metadata=meta,
        tensor=tensor_util.make_tensor_proto(np.float32(value)))
                     for tag, value in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Each value a uint8 [N, H, W, C] batch (or one [H, W, C] image)."""
    values = []
    for tag, batch in images.items():
      batch = np.asarray(batch)
      batch = batch[None] if batch.ndim == 3 else batch
      if batch.dtype != np.uint8:
        raise TypeError(f"image summary {tag!r}: expected uint8, got {batch.dtype}")
      height, width = batch.shape[1:3]
      encoded = [str(width).encode(), str(height).encode()] + [_png(im) for im in batch]
      values.append(summary_pb2.Summary.Value(
          tag=tag, metadata=image_metadata.create_summary_metadata(display_name="",
                                                                   description=""),
          tensor=tensor_util.make_tensor_proto(encoded, shape=[len(encoded)])))
    self._add(step, values)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Flat `name: bool | int | float | str` values (HParams dashboard)."""
    self._event(event_pb2.Event(step=0, summary=hparams_summary.hparams_pb(dict(hparams))))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

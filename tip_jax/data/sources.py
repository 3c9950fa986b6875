"""Record sources: random-access sequences of image-text records for the Grain pipeline.

A record is `{"image": bytes, "captions": list[str], "id": str, "source": str}`, with
the image bytes exactly as stored (JPEG, PNG, WebP, ...): decoding happens in the
pipeline, where bad files are counted instead of crashing a job. Sources are named by
a spec string, the form `DataConfig.source` takes:

    demo, demo:heldout, demo:train+extra    photographs bundled with installed
                                            packages (tip_jax.data.demo): the
                                            training split, the held-out one, splits
                                            joined by "+"
    arrayrecord:/data/coco/*.array_record   shards written by `tip-prepare`
    tfds:coco_captions:train:/data/tfds     a TFDS set prepared on disk as array_record
                                            (the data dir is optional)

ArrayRecord shards hold one msgpack map per record, written with group size 1 so a
read touches one record only (the pipeline reads in shuffled order), uncompressed
because image bytes do not compress.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Protocol, Sequence

import msgpack
import numpy as np
from array_record.python import array_record_module

from tip_jax.data.images import SKIPPED_CORRUPT, BadData
from tip_jax.errors import DataError

SHARD_OPTIONS = "group_size:1,uncompressed"
_TFDS_SPEC = re.compile(r"tfds:(?P<name>[^:]+):(?P<split>[^:\[]+(?:\[[^\]]*\])?)(?::(?P<dir>.+))?$")


class Source(Protocol):
  def __len__(self) -> int: ...
  def __getitem__(self, index: int) -> dict[str, Any]: ...


def encode_record(image: bytes, captions: Sequence[str], record_id: str, source: str) -> bytes:
  return msgpack.packb({"image": bytes(image), "captions": [str(c) for c in captions],
                        "id": str(record_id), "source": str(source)})


def decode_record(data: bytes) -> dict[str, Any]:
  """Raises `BadData` for bytes that are not a record, so the pipeline skips them."""
  try:
    record = msgpack.unpackb(data)
    if not isinstance(record.get("image"), bytes):
      raise ValueError("no image bytes")
  except Exception as e:  # noqa: BLE001  (msgpack raises several unrelated types)
    raise BadData(SKIPPED_CORRUPT, f"unreadable record ({type(e).__name__}: {e})") from None
  return record


class ShardWriter:
  """Writes one shard all at once: into a hidden partial file, renamed on a clean exit.

  A killed or failed write never leaves a partial shard under the real name, and an
  existing shard is never replaced.
  """

  def __init__(self, path: str):
    if os.path.exists(path):
      raise FileExistsError(f"{path} exists; shards are never overwritten")
    self.path = path
    self.count = 0
    self._partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")

  def __enter__(self) -> ShardWriter:
    self._writer = array_record_module.ArrayRecordWriter(self._partial, SHARD_OPTIONS)
    return self

  def write(self, record: bytes) -> None:
    self._writer.write(record)
    self.count += 1

  def __exit__(self, exc_type, exc, traceback) -> None:
    self._writer.close()
    if exc_type is None:
      os.rename(self._partial, self.path)
    else:
      os.remove(self._partial)


class ArrayRecordSource:
  """Every record of the shards matching `pattern`, in sorted file order."""

  def __init__(self, pattern: str):
    self.paths = sorted(glob.glob(os.path.expanduser(pattern)))
    if not self.paths:
      raise DataError(f"{pattern}: no ArrayRecord files match")
    import grain  # deferred: slow to import, and tip-prepare only writes shards
    self._data = grain.sources.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return decode_record(self._data[index])


def import_tfds():
  """tensorflow_datasets, an optional dependency: only TFDS sources and inputs need it."""
  try:
    import tensorflow_datasets as tfds
    tfds.core  # noqa: B018  (a partial install imports but has no builders)
  except (ImportError, AttributeError):
    raise DataError("TFDS sources need tensorflow_datasets and tensorflow: "
                    "pip install tensorflow-datasets tensorflow-cpu") from None
  return tfds


def _texts(value) -> list[str]:
  """A Text feature's value (bytes, str, or a sequence of them) -> list of str."""
  if isinstance(value, (bytes, str, np.bytes_, np.str_)):
    value = [value]
  return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value]


class TFDSRecords:
  """Maps a TFDS dataset's examples to records: which feature is the image, the captions, the id.

  The image is the first `Image` feature (read undecoded); captions come from the first
  `Text` feature (preferring one named like "caption"), possibly inside a `Sequence`
  of dicts as in coco_captions' `captions/text`; the id from `image/id`, `id` or
  `image/filename` when present, else the example's index.
  """

  def __init__(self, builder):
    tfds = import_tfds()
    features = builder.info.features
    self.name = builder.info.name
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not images:
      raise DataError(f"tfds:{self.name}: no Image feature among {sorted(features)}")
    self.image_key = images[0]
    texts = []
    for key, feature in features.items():
      inner = feature.feature if isinstance(feature, tfds.features.Sequence) else feature
      if isinstance(inner, tfds.features.Text):
        texts.append((key,))
      elif isinstance(inner, tfds.features.FeaturesDict):
        texts += [(key, sub) for sub, f in inner.items() if isinstance(f, tfds.features.Text)]
    texts.sort(key=lambda path: "caption" not in "/".join(path))
    self.caption_path = texts[0] if texts else None
    self.id_key = next((k for k in ("image/id", "id", "image/filename") if k in features), None)
    self.decoders = {self.image_key: tfds.decode.SkipDecoding()}

  def record(self, example: dict, index: int) -> dict[str, Any]:
    captions = example
    for key in self.caption_path or ():
      captions = captions[key]
    record_id = example[self.id_key] if self.id_key else index
    if isinstance(record_id, bytes):
      record_id = record_id.decode("utf-8", "replace")
    return {"image": bytes(example[self.image_key]),
            "captions": _texts(captions) if self.caption_path else [],
            "id": str(record_id), "source": self.name}


def _first_line(error: Exception) -> str:
  """TFDS errors run to many lines (lists of every dataset); a CLI prints one."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def tfds_builder(name: str, data_dir: str | None):
  """The builder of a TFDS set prepared on disk; `DataError` if it is not there."""
  tfds = import_tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001  (tfds raises many types for a missing set)
    raise DataError(f"tfds:{name}: cannot open it ({_first_line(e)})") from None
  if not builder.is_prepared():
    raise DataError(f"tfds:{name}: not prepared in {data_dir or 'the default data dir'}; "
                    "nothing is downloaded at run time")
  return builder


def is_array_record(builder) -> bool:
  return getattr(builder.info.file_format, "value", None) == "array_record"


class TFDSSource:
  """A TFDS split with random access (`tfds.data_source`), images left encoded."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    builder = tfds_builder(name, data_dir)
    if not is_array_record(builder):
      raise DataError(f"tfds:{name} is stored as {builder.info.file_format}; random access "
                      "needs array_record: convert it with `tip-prepare --format=tfds`")
    self._records = TFDSRecords(builder)
    try:
      self._data = builder.as_data_source(split=split, decoders=self._records.decoders)
    except Exception as e:  # noqa: BLE001
      raise DataError(f"tfds:{name}: no split {split!r} ({_first_line(e)})") from None

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._records.record(self._data[index], index)


def open_source(spec: str) -> Source:
  """The source a `DataConfig.source` spec names; `DataError` for a bad spec or path."""
  if spec == "demo" or spec.startswith("demo:"):
    from tip_jax.data import demo  # deferred: imports scikit-image
    return demo.DemoSource(spec.partition(":")[2] or "train")
  if spec.startswith("arrayrecord:"):
    return ArrayRecordSource(spec[len("arrayrecord:"):])
  match = _TFDS_SPEC.match(spec)
  if match:
    return TFDSSource(match["name"], match["split"], match["dir"])
  raise DataError(f"data source {spec!r}: expected 'demo[:SPLIT[+SPLIT]]', 'arrayrecord:GLOB' or "
                  "'tfds:NAME:SPLIT[:DATA_DIR]'")

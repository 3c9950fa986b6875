"""What `tip-prepare` reads: image folders with caption tables, COCO captions, TFDS sets.

Each input is a fixed, ordered list of items, so a shard always holds the same items
and an interrupted run can resume shard by shard. `read(start, stop)` yields, per item,
either an encoded record or the reason it was skipped (a short name that is counted).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import os
from typing import Iterator, Sequence

from PIL import Image

from tip_jax.data import sources
from tip_jax.errors import DataError

IMAGE_COLUMNS = ("file_name", "filename", "image", "image_path", "path", "file")
CAPTION_COLUMNS = ("caption", "captions", "text", "alt_text", "prompt")
ID_COLUMNS = ("id", "key", "image_id")

# Reasons an item is skipped.
MISSING_FILE, NOT_IMAGE = "missing_file", "not_image"
NO_CAPTION, BAD_LINE = "no_caption", "bad_line"


@dataclasses.dataclass
class Entry:
  path: str
  captions: list[str]
  id: str


def _check_image(data: bytes) -> str | None:
  """A skip reason if PIL cannot even read the header (full decoding is the pipeline's job)."""
  try:
    with Image.open(io.BytesIO(data)):
      return None
  except Exception:  # noqa: BLE001  (unidentified, a bomb, or a malformed header)
    return NOT_IMAGE


class FileInput:
  """Images on disk with their captions (from a caption table or COCO annotations)."""

  def __init__(self, name: str, description: str, entries: Sequence[Entry],
               parse_skipped: collections.Counter):
    self.name, self.description = name, description
    self.entries, self.parse_skipped = list(entries), parse_skipped

  def __len__(self) -> int:
    return len(self.entries)

  def read(self, start: int, stop: int) -> Iterator[bytes | str]:
    for entry in self.entries[start:stop]:
      if not any(c.strip() for c in entry.captions):
        yield NO_CAPTION
        continue
      try:
        with open(entry.path, "rb") as f:
          data = f.read()
      except OSError:
        yield MISSING_FILE
        continue
      reason = _check_image(data)
      yield reason or sources.encode_record(data, entry.captions, entry.id, self.name)


def _rows(path: str, parse_skipped: collections.Counter) -> list[dict]:
  """Rows of a JSONL, CSV or TSV file (by extension)."""
  ext = os.path.splitext(path)[1].lower()
  try:
    with open(path, encoding="utf-8", newline="") as f:
      if ext in (".csv", ".tsv"):
        return list(csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ","))
      if ext != ".jsonl":
        raise DataError(f"{path}: expected a .jsonl, .csv or .tsv caption file")
      rows = []
      for line in f:
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          row = None
        if isinstance(row, dict):
          rows.append(row)
        else:
          parse_skipped[BAD_LINE] += 1
      return rows
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"{path}: cannot read the caption file ({e})") from None


def _column(rows: list[dict], given: str | None, candidates: Sequence[str], what: str,
            path: str, flag: str) -> str | None:
  keys = {k for row in rows[:100] for k in row}
  if given:
    if given not in keys:
      raise DataError(f"{path}: no column {given!r} (columns: {', '.join(sorted(keys))})")
    return given
  found = next((c for c in candidates if c in keys), None)
  if found is None and what != "id":
    raise DataError(f"{path}: no {what} column (looked for {', '.join(candidates)}); "
                    f"name it with --{flag}")
  return found


def caption_table(images: str, captions: str, image_column: str | None = None,
                  caption_column: str | None = None, id_column: str | None = None) -> FileInput:
  """A folder of images and a JSONL / CSV / TSV table naming them (paths relative to it).

  Rows naming the same image add captions to it; a caption cell may also hold a list.
  """
  if not os.path.isdir(images):
    raise DataError(f"{images}: no such image folder")
  skipped = collections.Counter()
  rows = _rows(captions, skipped)
  if not rows:
    raise DataError(f"{captions}: no rows")
  image_key = _column(rows, image_column, IMAGE_COLUMNS, "image", captions, "image_column")
  caption_key = _column(rows, caption_column, CAPTION_COLUMNS, "caption", captions,
                        "caption_column")
  id_key = _column(rows, id_column, ID_COLUMNS, "id", captions, "id_column")
  entries: dict[str, Entry] = {}
  for row in rows:
    name = row.get(image_key)
    if not isinstance(name, str) or not name:
      skipped[BAD_LINE] += 1
      continue
    text = row.get(caption_key) or []
    texts = [text] if isinstance(text, str) else [str(t) for t in text]
    entry = entries.setdefault(name, Entry(os.path.join(images, name), [],
                                           str(row.get(id_key) or name)))
    entry.captions += texts
  base = os.path.splitext(os.path.basename(captions))[0]
  return FileInput(base, f"captions:{os.path.abspath(captions)}", list(entries.values()),
                   skipped)


def coco(images: str, annotations: str) -> FileInput:
  """COCO captions: `images` and `annotations` lists in one JSON, image files in a folder."""
  if not os.path.isdir(images):
    raise DataError(f"{images}: no such image folder")
  try:
    with open(annotations, encoding="utf-8") as f:
      data = json.load(f)
    by_image = collections.defaultdict(list)
    for ann in data["annotations"]:
      by_image[ann["image_id"]].append(str(ann["caption"]).strip())
    entries = [Entry(os.path.join(images, im["file_name"]), by_image.get(im["id"], []),
                     str(im["id"])) for im in data["images"]]
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{annotations}: cannot read the annotations ({e})") from None
  except (KeyError, TypeError) as e:
    raise DataError(f"{annotations}: not a COCO captions file (missing {e})") from None
  return FileInput("coco", f"coco:{os.path.abspath(annotations)}", entries,
                   collections.Counter())


class TFDSInput:
  """A TFDS split prepared on disk, in any file format, read in its stored order."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    self._builder = sources.tfds_builder(name, data_dir)
    self._records = sources.TFDSRecords(self._builder)
    if split not in self._builder.info.splits:
      raise DataError(f"tfds:{name}: no split {split!r} (has "
                      f"{', '.join(sorted(self._builder.info.splits))})")
    self.name, self.split = name.replace("/", "_"), split
    self.description = f"tfds:{name}:{split}:{os.path.abspath(self._builder.data_dir)}"
    self.parse_skipped = collections.Counter()
    self._count = self._builder.info.splits[split].num_examples

  def __len__(self) -> int:
    return self._count

  def _examples(self, start: int, stop: int) -> Iterator[dict]:
    decoders = self._records.decoders
    if sources.is_array_record(self._builder):
      data = self._builder.as_data_source(split=self.split, decoders=decoders)
      yield from (data[i] for i in range(start, stop))
    else:   # tfrecord: sequential reads only
      tfds = sources.import_tfds()
      ds = self._builder.as_dataset(split=self.split, decoders=decoders, shuffle_files=False)
      yield from tfds.as_numpy(ds.skip(start).take(stop - start))

  def read(self, start: int, stop: int) -> Iterator[bytes | str]:
    for index, example in enumerate(self._examples(start, stop), start):
      record = self._records.record(example, index)
      if not any(c.strip() for c in record["captions"]):
        yield NO_CAPTION
        continue
      yield _check_image(record["image"]) or sources.encode_record(
          record["image"], record["captions"], record["id"], record["source"])

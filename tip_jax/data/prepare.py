"""`tip-prepare`: image-text data -> ArrayRecord shards (`source="arrayrecord:OUT/*.array_record"`).

    tip-prepare --images=DIR --captions=captions.jsonl --output=OUT          # or .csv / .tsv
    tip-prepare --images=train2017 --annotations=captions_train2017.json --output=OUT  # COCO
    tip-prepare --tfds=coco_captions:train --tfds_data_dir=~/tensorflow_datasets --output=OUT

Shards are `OUT/<name>-00000-of-000NN.array_record`, `--shard_size` input items each,
images stored as they are (no re-encoding). Items without a readable image header or
without a caption are skipped and counted. Re-running the same command resumes:
finished shards are kept; a shard is written to a hidden partial file and renamed only
when complete. `OUT/tip_prepare.json` records the input and each shard's counts, and
a different input (or shard size) into the same folder is refused.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys

from absl import app, flags
from tqdm import tqdm

from tip_jax.data import inputs, sources
from tip_jax.data.sources import DataError

MANIFEST = "tip_prepare.json"

_IMAGES = flags.DEFINE_string("images", None, "Image folder (with --captions or --annotations); "
                              "image paths in the captions table are relative to it.")
_CAPTIONS = flags.DEFINE_string("captions", None, "A .jsonl, .csv or .tsv table of image paths "
                                "and captions (WebLi- / LAION-style exports).")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "COCO captions JSON "
                                   "(e.g. captions_train2017.json).")
_TFDS = flags.DEFINE_string("tfds", None, "NAME:SPLIT of a TFDS set already prepared on disk.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data dir (default: TFDS's).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the shards (created if needed).")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 1000, "Input items per shard.")
_IMAGE_COLUMN = flags.DEFINE_string("image_column", None, "Image path column of --captions "
                                    f"(default: the first of {', '.join(inputs.IMAGE_COLUMNS)}).")
_CAPTION_COLUMN = flags.DEFINE_string("caption_column", None, "Caption column of --captions "
                                      f"(default: the first of "
                                      f"{', '.join(inputs.CAPTION_COLUMNS)}).")
_ID_COLUMN = flags.DEFINE_string("id_column", None, "Id column of --captions (default: the "
                                 f"first of {', '.join(inputs.ID_COLUMNS)}, else the path).")


def _manifest(output: str, signature: dict) -> dict:
  """The folder's manifest for this input; `DataError` if the folder holds another's shards."""
  path = os.path.join(output, MANIFEST)
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise DataError(f"{path}: unreadable ({e}); use a new --output") from None
    if manifest.get("input") != signature:
      raise DataError(f"{output} holds shards of another input or shard size "
                      f"({manifest.get('input')}); use a new --output")
    return manifest
  if any(name.endswith(".array_record") for name in os.listdir(output)):
    raise DataError(f"{output} already holds ArrayRecord files tip-prepare did not write; "
                    "use a new --output")
  return {"input": signature, "shards": {}}


def _save(output: str, manifest: dict) -> None:
  partial = os.path.join(output, f".{MANIFEST}.partial")
  with open(partial, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=1)
  os.replace(partial, os.path.join(output, MANIFEST))


def prepare(data, output: str, shard_size: int, progress: bool = True) -> dict:
  """Writes (or completes) the shards of `data` (an `inputs` input) in `output`.

  Returns {"shards", "resumed" (shards already there), "written", "skipped": {reason: n}}.
  """
  if shard_size < 1:
    raise DataError(f"--shard_size={shard_size}: must be at least 1")
  total = len(data)
  if total == 0:
    raise DataError(f"{data.description}: no items to prepare")
  num_shards = math.ceil(total / shard_size)
  os.makedirs(output, exist_ok=True)
  manifest = _manifest(output, {"source": data.description, "items": total,
                                "shard_size": shard_size})
  names = [f"{data.name}-{i:05d}-of-{num_shards:05d}.array_record" for i in range(num_shards)]
  done = [os.path.exists(os.path.join(output, name)) for name in names]
  initial = sum(min(shard_size, total - i * shard_size) for i in range(num_shards) if done[i])
  with tqdm(total=total, initial=initial, unit="img", disable=not progress,
            desc=f"tip-prepare {output}") as bar:
    for i, name in enumerate(names):
      if done[i]:
        continue
      skipped = collections.Counter()
      with sources.ShardWriter(os.path.join(output, name)) as shard:
        for item in data.read(i * shard_size, min(total, (i + 1) * shard_size)):
          bar.update(1)
          if isinstance(item, str):
            skipped[item] += 1
          else:
            shard.write(item)
        # Saved before the shard's rename, so every shard on disk has its counts.
        manifest["shards"][name] = {"written": shard.count, "skipped": dict(skipped)}
        _save(output, manifest)
  skipped = collections.Counter(data.parse_skipped)
  for name in names:
    skipped.update(manifest["shards"][name]["skipped"])
  return {"shards": num_shards, "resumed": sum(done),
          "written": sum(manifest["shards"][name]["written"] for name in names),
          "skipped": dict(sorted(skipped.items()))}


def _input():
  given = [f for f, v in (("--captions", _CAPTIONS.value), ("--annotations", _ANNOTATIONS.value),
                          ("--tfds", _TFDS.value)) if v]
  if len(given) != 1:
    raise DataError("give exactly one input: --captions or --annotations (each with "
                    "--images), or --tfds")
  if _TFDS.value:
    name, _, split = _TFDS.value.partition(":")
    if not split:
      raise DataError(f"--tfds={_TFDS.value}: expected NAME:SPLIT, e.g. coco_captions:train")
    return inputs.TFDSInput(name, split, _TFDS_DATA_DIR.value)
  if not _IMAGES.value:
    raise DataError(f"{given[0]} needs --images (the folder the image paths are relative to)")
  if _ANNOTATIONS.value:
    return inputs.coco(_IMAGES.value, _ANNOTATIONS.value)
  return inputs.caption_table(_IMAGES.value, _CAPTIONS.value, _IMAGE_COLUMN.value,
                              _CAPTION_COLUMN.value, _ID_COLUMN.value)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"tip-prepare: unexpected arguments {' '.join(argv[1:])} (inputs are flags)")
  if not _OUTPUT.value:
    sys.exit("tip-prepare: --output is required")
  try:
    summary = prepare(_input(), _OUTPUT.value, _SHARD_SIZE.value)
  except DataError as e:
    sys.exit(f"tip-prepare: {e}")
  except KeyboardInterrupt:
    sys.exit(f"tip-prepare: interrupted; finished shards in {_OUTPUT.value} are kept, "
             "run the same command again to resume")
  skipped = sum(summary["skipped"].values())
  why = ", ".join(f"{reason} {n}" for reason, n in summary["skipped"].items())
  kept = f" ({summary['resumed']} shards kept from an earlier run)" if summary["resumed"] else ""
  print(f"tip-prepare: {_OUTPUT.value}: {summary['shards']} shards, {summary['written']} "
        f"records{kept}; skipped {skipped}" + (f": {why}" if why else ""))


def run() -> None:
  app.run(main)


if __name__ == "__main__":
  run()

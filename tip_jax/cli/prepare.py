"""Usage: tip-prepare (--captions FILE --images DIR | --annotations FILE --images DIR |
                    --tfds NAME:SPLIT) --output OUT [--shard_size 1000]

Image-text data -> ArrayRecord shards (`source="arrayrecord:OUT/*.array_record"`).

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

import sys

from absl import flags

from tip_jax.cli import common, data_flags
from tip_jax.data import inputs
from tip_jax.data.prepare import prepare
from tip_jax.errors import DataError

PROG = "tip-prepare"
_IMAGES, _CAPTIONS = data_flags.IMAGES, data_flags.CAPTIONS
flags.declare_key_flag("images")
flags.declare_key_flag("captions")
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
    common.fail(PROG, f"unexpected arguments {' '.join(argv[1:])} (inputs are flags)")
  if not _OUTPUT.value:
    common.fail(PROG, "--output is required")
  try:
    summary = prepare(_input(), _OUTPUT.value, _SHARD_SIZE.value)
  except KeyboardInterrupt:
    common.fail(PROG, f"interrupted; finished shards in {_OUTPUT.value} are kept, "
                "run the same command again to resume")
  skipped = sum(summary["skipped"].values())
  why = ", ".join(f"{reason} {n}" for reason, n in summary["skipped"].items())
  kept = f" ({summary['resumed']} shards kept from an earlier run)" if summary["resumed"] else ""
  print(f"tip-prepare: {_OUTPUT.value}: {summary['shards']} shards, {summary['written']} "
        f"records{kept}; skipped {skipped}" + (f": {why}" if why else ""))


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__]])


if __name__ == "__main__":
  run()

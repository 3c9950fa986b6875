"""Usage: tip-eval --pred DIR --ref DIR [--captions FILE] [--metrics LIST] [--json OUT]

    tip-eval --pred restored/ --ref coco_param/gt --captions coco_param/index.jsonl \\
      --metrics psnr,ssim,lpips,fid,clip_i,clip_t --inception inception.safetensors \\
      --clip /models/clip-vit-large-patch14 --json scores.json

Score any method's restored images (ours, StableSR's, DiffBIR's, ...) against the
references with the same metric code as the evaluator job. Files pair up by name
without the extension; files that do not pair up, cannot be read or differ in size are
listed on stderr and left out (exit status 0). Prints {metric: {"mean", "count"}} as
JSON, and writes it to --json. A metric whose weights are not given is left out with
one line saying which file it needs. The evaluator that follows a training run is
`tip-train --mode=eval` (same config and workdir as the trainer).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from tip_jax.cli import common, data_flags

PROG = "tip-eval"
_PRED = flags.DEFINE_string("pred", None, "Folder of restored images.")
_REF = flags.DEFINE_string("ref", None, "Folder of reference (ground-truth) images.")
_CAPTIONS = data_flags.CAPTIONS
flags.declare_key_flag("captions")
_METRICS = flags.DEFINE_string("metrics", "psnr,ssim,lpips",
                               "Comma-separated: psnr, ssim, lpips, fid, clip_i, clip_t.")
_JSON = flags.DEFINE_string("json", None, "Write the scores to this JSON file too.")
_INCEPTION = flags.DEFINE_string("inception", "", "Inception weights for FID "
                                 "(tip-convert-inception's output).")
_CLIP = flags.DEFINE_string("clip", "", "A local Hugging Face CLIP folder for CLIP-I/-T.")
_LPIPS_NET = flags.DEFINE_enum("lpips_net", "alex", ["alex", "vgg"], "LPIPS v0.1 trunk.")
_CROP = flags.DEFINE_integer("crop_border", 0, "PSNR/SSIM: pixels cut from every edge.")
_Y = flags.DEFINE_bool("y_channel", False, "PSNR/SSIM on BT.601 luma instead of RGB.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Image pairs scored together.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(PROG, f"unexpected arguments {' '.join(argv[1:])}")
  if not _PRED.value or not _REF.value:
    common.fail(PROG, "--pred and --ref are required")
  if _JSON.value and os.path.exists(_JSON.value) and not common.OVERWRITE.value:
    common.fail(PROG, f"{_JSON.value} exists; pass --overwrite to replace it")
  from tip_jax.eval import folders, scoring  # deferred: JAX starts only for real work
  captions = folders.read_captions(_CAPTIONS.value) if _CAPTIONS.value else None
  scorer = scoring.Scorer.load(_METRICS.value, lpips_net=_LPIPS_NET.value,
                               inception=_INCEPTION.value, clip=_CLIP.value,
                               crop_border=_CROP.value, y_channel=_Y.value)
  if "clip_t" in scorer.metrics and captions is None:
    print(f"{PROG}: clip_t left out: it needs --captions", file=sys.stderr)
  results, problems = folders.score_folders(_PRED.value, _REF.value, scorer,
                                            captions=captions, batch_size=_BATCH.value)
  for line in problems.lines:
    print(f"{PROG}: skipped {line}", file=sys.stderr)
  text = json.dumps(results, indent=1)
  print(text)
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w", encoding="utf-8") as f:
      f.write(text + "\n")


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__], common])


if __name__ == "__main__":
  run()

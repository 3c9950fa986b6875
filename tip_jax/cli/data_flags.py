"""Flags that several scripts share (tip-prepare, tip-degrade, tip-make-benchmark,
tip-eval).

absl allows one definition per flag name in a process, so they are defined here once,
and each script declares the ones it uses as its own key flags
(`flags.declare_key_flag`): its --help then lists those, not every flag of this module.
"""

from __future__ import annotations

from absl import flags

IMAGES = flags.DEFINE_string("images", None, "Image folder. tip-prepare: image paths in "
                             "--captions or --annotations are relative to it; "
                             "tip-make-benchmark: the COCO val2017 or DIV2K validation HR "
                             "folder.")
CAPTIONS = flags.DEFINE_string("captions", None, "tip-prepare: a .jsonl, .csv or .tsv table "
                               "of image paths and captions (WebLi- / LAION-style exports); "
                               "tip-make-benchmark: the COCO captions JSON "
                               "(captions_val2017.json); tip-eval: captions for CLIP-T, a "
                               "JSON object {name: caption} or a .jsonl of lines with id "
                               "and caption (a test set's index.jsonl).")
SIZE = flags.DEFINE_integer("size", None, "Side of the square images. tip-degrade: the "
                            "degraded crop (default 256); tip-make-benchmark: the sets' "
                            "images (default 512, 64 for --kind=embedded).")

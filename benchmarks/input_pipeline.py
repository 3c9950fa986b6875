"""Input-pipeline throughput: one worker at 512^2, and the tiny config's headroom.

    python benchmarks/input_pipeline.py                               # defaults below
    python benchmarks/input_pipeline.py --consume-images-per-s 20     # the trainer's rate

1. Per worker: images/s of the whole per-example path (read, JPEG decode, crop to
   512^2, flip, degradation parameters and prompt, CLIP tokenization, batching) in one
   process with one reading thread, over an ArrayRecord shard of 768x576 JPEGs
   (quality 90) cut from scikit-image's photographs: a typical web-photo size.
2. Tiny config: its own data settings (`configs/tip.py:tiny`: the demo photos at 64^2,
   batch 8, its worker count); images/s the pipeline delivers, divided by what the
   trainer consumes (`--consume-images-per-s`; the tiny trainer runs about 2.5 steps of
   8 images a second on the 2-core CPU machine, so 20 by default). The goal is a ratio
   of at least 2.

Prints one JSON object: the figures, the config, the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import tempfile
import time

import grain
import numpy as np
import PIL
from absl import flags
from PIL import Image

from tip_jax.data import demo, sources
from tip_jax.data.config import DataConfig
from tip_jax.data.pipeline import make_iterator
from tip_jax.degrade import DegradeConfig
from tip_jax.experiment.config import load_config
from tip_jax.models.tokenizer import bundled_tokenizer


def web_photos(path: str, count: int, size=(768, 576), quality: int = 90) -> None:
  """`count` JPEGs of `size`, random crops of the demo photographs, as one shard."""
  rng = np.random.default_rng(0)
  records = demo.DemoSource("train")
  photos = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in records]
  with sources.ShardWriter(path) as shard:
    for i in range(count):
      im = photos[i % len(photos)]
      scale = max(size[0] / im.width, size[1] / im.height) * rng.uniform(1.0, 1.5)
      im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
      left = rng.integers(im.width - size[0] + 1)
      top = rng.integers(im.height - size[1] + 1)
      buf = io.BytesIO()
      im.crop((left, top, left + size[0], top + size[1])).save(buf, "JPEG", quality=quality)
      shard.write(sources.encode_record(buf.getvalue(), records[i % len(photos)]["captions"][:1],
                                        str(i), "bench"))


def images_per_second(config: DataConfig, batch: int, batches: int, tokenizer) -> float:
  """Delivered images/s over `batches` batches, after one warm-up batch (worker start-up)."""
  it = make_iterator(config, batch_size=batch, seed=0, tokenizer=tokenizer,
                     degrade_config=DegradeConfig(size=(config.resolution,) * 2),
                     process_index=0, process_count=1)
  next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches * batch / (time.perf_counter() - start)
  it.close()
  return rate


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--consume-images-per-s", type=float, default=20.0,
                      help="images/s the trainer consumes at the tiny config")
  parser.add_argument("--photos", type=int, default=48, help="JPEGs in the 512^2 shard")
  parser.add_argument("--batches", type=int, default=6, help="timed batches of 8 at 512^2")
  parser.add_argument("--tiny-batches", type=int, default=40, help="timed batches at 64^2")
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()
  tokenizer = bundled_tokenizer()

  with tempfile.TemporaryDirectory() as tmp:
    shard = os.path.join(tmp, "web-00000-of-00001.array_record")
    web_photos(shard, args.photos)
    one_worker = DataConfig(source=f"arrayrecord:{shard}", resolution=512, num_workers=0,
                            read_threads=1)
    per_worker = images_per_second(one_worker, 8, args.batches, tokenizer)

  tiny_config = load_config("configs/tip.py:tiny")
  tiny = DataConfig(**tiny_config.data)
  tiny_rate = images_per_second(tiny, tiny_config.batch_size, args.tiny_batches, tokenizer)
  report = {
      "per_worker_512": {"images_per_s": round(per_worker, 1),
                         "config": dataclasses.asdict(one_worker) | {"batch": 8},
                         "input": f"{args.photos} JPEG 768x576 q90 in one ArrayRecord shard"},
      "tiny": {"images_per_s": round(tiny_rate, 1),
               "consume_images_per_s": args.consume_images_per_s,
               "ratio": round(tiny_rate / args.consume_images_per_s, 2), "goal_ratio": 2.0,
               "config": dataclasses.asdict(tiny) | {"batch": tiny_config.batch_size}},
      "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                  "load_average_1min": round(os.getloadavg()[0], 2),
                  "grain": grain.__version__, "pillow": PIL.__version__},
  }
  report["per_worker_512"]["config"].pop("source")
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()

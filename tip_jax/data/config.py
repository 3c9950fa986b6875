"""`DataConfig`: the input pipeline's settings, and their one set of defaults.

Kept apart from the pipeline so that config files (`configs/tip.py` starts its `data`
block from these defaults) import no Grain or JAX.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What the trainer's `config.data` holds (`DataConfig(**config.data)`).

  max_zoom: crops cover between 1/max_zoom and all of an image's short side (1 = the
    usual resize-short-side-then-crop; the demo source wants ~4 to make its eight
    photographs into many different crops).
  num_workers: `mp_prefetch` processes (0 = in this process); each decodes with
    `read_threads` threads and keeps `prefetch_buffer` batches ready.
  max_pixels: the largest decode; bigger JPEGs are draft-decoded at 1/2..1/8, other
    formats are skipped.
  channel_shuffle: the probability that a crop's RGB channels are permuted (one of the
    five non-identity orders, uniformly): a colour augmentation for pretraining the VAE,
    whose dozen training photos (half of them grey) otherwise teach it too few colours
    to reconstruct a held-out one's (README, "Pretraining a backbone"). Off for
    text-conditioned training, whose captions name colours.
  worker_nice: added to the workers' niceness (`os.nice`), so that they run on the CPU
    time the train step leaves. XLA:CPU splits each op over all cores and waits for the
    slowest part: one core busy with decoding at normal priority stalls every op (a 2-core
    machine: the tiny step 319 ms alone, 450 ms beside a load of 0.3 core, 331 ms with
    that load at niceness 19). Workers still get every idle cycle, so an accelerator
    host, whose CPU the step leaves idle, loses nothing.
  """

  source: str = "demo"
  resolution: int = 512
  semantic_dropout: float = 0.1
  flip: bool = True
  max_zoom: float = 1.0
  num_workers: int = 2
  read_threads: int = 2
  prefetch_buffer: int = 2
  max_pixels: int = 8192 * 8192
  channel_shuffle: float = 0.0
  shuffle: bool = True
  worker_nice: int = 19

"""Benchmark test sets on disk, so that every model (ours or another lab's) is scored on
identical inputs.

The paper (§4.1, Tab. 1) scores 3000 MS-COCO val image-caption pairs under two
degradations, and Tab. 3 StableSR's DIV2K-val crops. `build` writes them:

    coco       set A "param": TIP's parameterised pipeline, drawn per image: c_r with
               values, and type-only for the `no_params` rows;
               set B "realesrgan": Real-ESRGAN x4plus, c_r = "Remove all degradation".
    div2k      set B only, from random crops of the DIV2K validation images, no captions.
    embedded   sets A and B from the photos bundled with scikit-image: offline, for CI
               and fresh machines (`ensure_embedded`).

Each set is a folder `<out>/<kind>_<set>_<size>/`:

    gt/<id>.png      the ground truth, size^2
    input/<id>.png   what a model restoring at size^2 is given: y rounded to 8 bits.
                     Set B: the LQ brought back with the bicubic training uses.
    lq/<id>.png      set B: the (size/4)^2 low-quality image, for SR models
    index.jsonl      one example a line: id, source, caption, restoration_prompt,
                     restoration_prompt_type_only, params (set A), gt/input/lq file names
    set.json         the build arguments (compared on a rebuild), the degradation config,
                     tip_jax version, backend, skipped files, and a SHA-256 over the files

Degradation parameters come from (seed, slot) alone (`sample_params` with indices), and
every device runs the batch-of-one program (`per_device` over a mesh of the devices),
so the bytes depend neither on how many examples run at once nor on the device count;
they do depend on the backend (CPU's `lax.map` and GPU's `vmap` loops differ by float
rounding, which can flip 8-bit values). About 1/16 of set A's draws apply no stage:
kept, with c_r = "" and input = gt (the paper is silent on them).

A set is written into a hidden `.<name>.partial` folder and renamed when complete, so a
set folder is always whole; building it again with the same arguments does nothing,
with other arguments raises `DataError`, and an interrupted build starts that set over.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from tqdm import tqdm

import tip_jax
from tip_jax.degrade import pipeline, prompts
from tip_jax.degrade.parameterized import from_arrays
from tip_jax.degrade.realesrgan import RealESRGANConfig
from tip_jax.errors import DataError, ImageError
from tip_jax.eval import ground_truth
from tip_jax.experiment import sharding
from tip_jax.image_io import read_rgb, write_png

KINDS = ("coco", "div2k", "embedded")
PARAM, REALESRGAN = "param", "realesrgan"
SETS = {"coco": (PARAM, REALESRGAN), "div2k": (REALESRGAN,), "embedded": (PARAM, REALESRGAN)}
DEFAULT_SIZE = {"coco": 512, "div2k": 512, "embedded": 64}
DEFAULT_COUNT = {"coco": 3000, "div2k": 3000, "embedded": 16}
FORMAT = 1
META, INDEX = "set.json", "index.jsonl"
# set.json keys a rebuild must match.
_ARGS = ("kind", "set", "size", "count", "seed", "source", "degradation")
_STAGES = tuple(c.field for c in prompts.CLAUSES)


@dataclasses.dataclass(frozen=True)
class Record:
  """One example as index.jsonl states it; file names are relative to the set folder."""

  id: str
  source: str                     # the file (and crop) the ground truth came from
  caption: str                    # c_s ("" for DIV2K)
  restoration_prompt: str         # c_r with values (set B: the blind prompt)
  restoration_prompt_type_only: str   # c_r naming the stages only (set B: the blind prompt)
  gt: str
  input: str
  params: dict[str, Any] | None = None  # set A: each stage's value (None: not applied), noise seed
  lq: str | None = None                 # set B only

  def line(self) -> str:
    """The index.jsonl line (fields a set does not have are left out)."""
    return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None})


@dataclasses.dataclass(frozen=True)
class Batch:
  ids: list[str]
  gt: np.ndarray                  # uint8 (B, size, size, 3)
  inputs: np.ndarray              # uint8 (B, size, size, 3), what the model is given
  lq: np.ndarray | None           # set B: uint8 (B, size/4, size/4, 3)
  captions: list[str]
  restoration: list[str]
  restoration_type_only: list[str]


def set_names(kind: str, size: int | None = None) -> list[str]:
  """The folders `build(kind, ...)` writes."""
  size = size or DEFAULT_SIZE[kind]
  return [f"{kind}_{name}_{size}" for name in SETS[kind]]


def content_hash(folder: str, files: Sequence[str]) -> str:
  """SHA-256 over (name, SHA-256 of the bytes) of `files` in sorted order."""
  total = hashlib.sha256()
  for name in sorted(files):
    try:
      with open(os.path.join(folder, name), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
      raise DataError(f"{os.path.join(folder, name)}: cannot read it ({e.strerror})") from None
    total.update(f"{name}\0{digest}\n".encode())
  return total.hexdigest()


def _files(records: Sequence[Record]) -> list[str]:
  return [INDEX] + [f for r in records for f in (r.gt, r.input, r.lq) if f]


def _read_meta(path: str) -> dict[str, Any]:
  file = os.path.join(path, META)
  try:
    with open(file, encoding="utf-8") as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{file}: no such file; {path} is not a benchmark set "
                    "(build one with tip-make-benchmark)") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{file}: unreadable ({e}); rebuild the set") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise DataError(f"{file}: not a format-{FORMAT} benchmark set; rebuild it with this "
                    "tip_jax")
  return meta


def _record(line: str, file: str, number: int) -> Record:
  try:
    return Record(**json.loads(line))
  except (json.JSONDecodeError, TypeError) as e:
    raise DataError(f"{file}: line {number} is not an example ({type(e).__name__}: {e}); "
                    "rebuild the set") from None


class EvalSet:
  """A built set: its records, and batches of its images as uint8 arrays."""

  def __init__(self, path: str, meta: dict[str, Any], records: list[Record]):
    self.path, self.meta, self.records = path, meta, records

  @classmethod
  def open(cls, path: str, *, verify: bool = False) -> EvalSet:
    """Reads set.json and index.jsonl; `verify` also checks the content hash."""
    meta = _read_meta(path)
    file = os.path.join(path, INDEX)
    try:
      with open(file, encoding="utf-8") as f:
        records = [_record(line, file, i + 1) for i, line in enumerate(f) if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      raise DataError(f"{file}: unreadable ({e}); rebuild the set") from None
    if len(records) != meta["count"]:
      raise DataError(f"{file}: {len(records)} examples, set.json says {meta['count']}; "
                      "rebuild the set")
    evalset = cls(path, meta, records)
    if verify:
      evalset.verify()
    return evalset

  @property
  def name(self) -> str:
    return self.meta["name"]

  @property
  def size(self) -> int:
    return self.meta["size"]

  def __len__(self) -> int:
    return len(self.records)

  def verify(self) -> None:
    """DataError unless the files hash to set.json's `content_sha256`."""
    if content_hash(self.path, _files(self.records)) != self.meta["content_sha256"]:
      raise DataError(f"{self.path}: its files do not match set.json's content_sha256 "
                      "(changed or damaged since the build); rebuild the set")

  def _image(self, name: str, side: int) -> np.ndarray:
    file = os.path.join(self.path, name)
    try:
      image = read_rgb(file)
    except ImageError as e:
      raise DataError(f"{e} (benchmark set {self.name}); rebuild the set") from None
    if image.shape != (side, side, 3):
      raise DataError(f"{file}: {image.shape[1]}x{image.shape[0]}, the set's images are "
                      f"{side}x{side}; rebuild the set")
    return image

  def batches(self, batch_size: int, *, start: int = 0) -> Iterator[Batch]:
    """The examples from `start` on, `batch_size` at a time (the last batch may be short)."""
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size}: must be at least 1")
    lq_side = self.size // self.meta["degradation"].get("scale", 1)
    for i in range(start, len(self), batch_size):
      chunk = self.records[i:i + batch_size]
      has_lq = chunk[0].lq is not None
      yield Batch(ids=[r.id for r in chunk],
                  gt=np.stack([self._image(r.gt, self.size) for r in chunk]),
                  inputs=np.stack([self._image(r.input, self.size) for r in chunk]),
                  lq=np.stack([self._image(r.lq, lq_side) for r in chunk]) if has_lq else None,
                  captions=[r.caption for r in chunk],
                  restoration=[r.restoration_prompt for r in chunk],
                  restoration_type_only=[r.restoration_prompt_type_only for r in chunk])


def _to_uint8(images: jax.Array) -> np.ndarray:
  return np.round(np.asarray(images) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _program(blind: bool, devices: tuple[jax.Device, ...]) -> Callable:
  """The jitted degradation, one example per device (see the module docstring)."""
  mesh = sharding.make_mesh({"data": -1}, devices)
  return jax.jit(pipeline.per_device(pipeline.degrade_blind if blind else pipeline.degrade,
                                     mesh))


class _Writer:
  """One set being written into its partial folder."""

  def __init__(self, out: str, name: str, args: dict[str, Any], config: pipeline.DegradeConfig):
    self.name, self.args, self.config = name, args, config
    self.blind = args["set"] == REALESRGAN
    self.final = os.path.join(out, name)
    self.partial = os.path.join(out, f".{name}.partial")
    shutil.rmtree(self.partial, ignore_errors=True)   # left by an interrupted build
    os.makedirs(self.partial)
    self.records: list[Record] = []

  def add(self, clean: list[ground_truth.Clean], slots: list[int], padded: np.ndarray,
          devices: tuple[jax.Device, ...]) -> None:
    """Degrades a padded chunk (one example per device) and writes its real examples."""
    indices = slots + [slots[-1]] * (len(padded) - len(slots))
    params, _ = pipeline.sample_params(self.args["seed"], len(indices), self.config, indices)
    x = padded.astype(np.float32) / 255
    if self.blind:
      lq, y = _program(True, devices)(x, params)
      lq = _to_uint8(lq)
      with_values = type_only = [prompts.BLIND_PROMPT] * len(slots)
    else:
      y = _program(False, devices)(x, params)
      with_values = pipeline.restoration_prompt(params, with_values=True)
      type_only = pipeline.restoration_prompt(params, with_values=False)
      stages = from_arrays(params.tip)
    y = _to_uint8(y)
    for i, (example, slot) in enumerate(zip(clean, slots)):
      uid = f"{slot:05d}"
      record = Record(id=uid, source=example.source, caption=example.caption,
                      restoration_prompt=with_values[i],
                      restoration_prompt_type_only=type_only[i],
                      gt=f"gt/{uid}.png", input=f"input/{uid}.png")
      if self.blind:
        record = dataclasses.replace(record, lq=f"lq/{uid}.png")
        write_png(lq[i], os.path.join(self.partial, record.lq))
      else:
        values = {f: getattr(stages[i], f) for f in _STAGES}
        record = dataclasses.replace(
            record, params={**values, "noise_seed": int(params.noise_seed[i])})
      write_png(example.image, os.path.join(self.partial, record.gt))
      write_png(y[i], os.path.join(self.partial, record.input))
      self.records.append(record)

  def finish(self, skipped: list[str]) -> None:
    with open(os.path.join(self.partial, INDEX), "w", encoding="utf-8") as f:
      f.writelines(r.line() + "\n" for r in self.records)
    meta = {"format": FORMAT, "name": self.name, **self.args,
            "tip_jax_version": tip_jax.__version__, "backend": jax.default_backend(),
            "skipped": list(skipped),
            "content_sha256": content_hash(self.partial, _files(self.records))}
    with open(os.path.join(self.partial, META), "w", encoding="utf-8") as f:
      json.dump(meta, f, indent=1)
    os.rename(self.partial, self.final)


def _degradation(name: str, config: pipeline.DegradeConfig) -> dict[str, Any]:
  if name == PARAM:
    return {"pipeline": "parameterized", **dataclasses.asdict(config.tip)}
  return {"pipeline": "realesrgan", **dataclasses.asdict(config.realesrgan)}


def _normal(value: Any) -> Any:
  """As JSON gives it back (tuples become lists), for comparing with set.json."""
  return json.loads(json.dumps(value))


def _is_built(path: str, args: dict[str, Any]) -> bool:
  """Whether `path` holds this set; DataError if it holds another."""
  if not os.path.exists(path):
    return False
  meta = _read_meta(path)
  differ = [k for k in _ARGS if _normal(meta.get(k)) != _normal(args[k])]
  if differ:
    what = ", ".join(f"{k} {meta.get(k)} (now {args[k]})" if k not in ("source", "degradation")
                     else f"{k} settings" for k in differ)
    raise DataError(f"{path} was built with other arguments: {what}; use another --out "
                    "or delete it")
  return True


def _write(writers: list[_Writer], source: ground_truth.Source, count: int,
           devices: tuple[jax.Device, ...], progress: bool) -> None:
  """Streams the ground truth through the writers, one example per device at a time."""
  chunk: list[ground_truth.Clean] = []
  with tqdm(total=count, unit="img", disable=not progress,
            desc=", ".join(w.name for w in writers)) as bar:
    for slot, example in enumerate(source.examples(count)):
      chunk.append(example)
      if len(chunk) == len(devices) or slot == count - 1:
        padded = np.stack([c.image for c in chunk] +
                          [chunk[-1].image] * (len(devices) - len(chunk)))
        slots = list(range(slot + 1 - len(chunk), slot + 1))
        for writer in writers:
          writer.add(chunk, slots, padded, devices)
        bar.update(len(chunk))
        chunk = []
  for writer in writers:
    writer.finish(source.skipped)


def build(kind: str, out_dir: str, *, size: int | None = None, count: int | None = None,
          seed: int = 0, images: str | None = None, captions: str | None = None,
          realesrgan: RealESRGANConfig = RealESRGANConfig.x4plus(),
          devices: Sequence[jax.Device] | None = None, progress: bool = False,
          split: str = "heldout") -> list[EvalSet]:
  """Writes the sets of `kind` under `out_dir` (those not already there) and opens them.

  images: the COCO val2017 or DIV2K HR folder; captions: the COCO captions JSON.
  size, count: default per kind (DEFAULT_SIZE, DEFAULT_COUNT).
  devices: the devices that degrade, one example each per call (default: all local).
  split: the embedded kind's photos (`tip_jax.data.demo.SPLITS`; "heldout" for scoring).
  """
  if kind not in KINDS:
    raise DataError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
  size = DEFAULT_SIZE[kind] if size is None else size
  count = DEFAULT_COUNT[kind] if count is None else count
  if count < 1:
    raise DataError(f"count={count}: must be at least 1")
  if size < 16 or size % realesrgan.scale:
    raise DataError(f"size={size}: must be a multiple of {realesrgan.scale} (the "
                    "Real-ESRGAN scale), at least 16")
  source = ground_truth.open_source(kind, size, seed, images, captions, split)
  os.makedirs(out_dir, exist_ok=True)
  writers = []
  for name, folder in zip(SETS[kind], set_names(kind, size)):
    config = pipeline.DegradeConfig(size=(size, size), realesrgan=realesrgan,
                                    realesrgan_prob=1.0 if name == REALESRGAN else 0.0)
    args = {"kind": kind, "set": name, "size": size, "count": count, "seed": seed,
            "source": source.signature, "degradation": _degradation(name, config)}
    if not _is_built(os.path.join(out_dir, folder), args):
      writers.append(_Writer(out_dir, folder, args, config))
  if writers:
    try:
      _write(writers, source, count, tuple(devices or jax.local_devices()), progress)
    except BaseException:
      for writer in writers:    # the ones not finished: partial folders are of no use
        shutil.rmtree(writer.partial, ignore_errors=True)
      raise
  return [EvalSet.open(os.path.join(out_dir, folder)) for folder in set_names(kind, size)]


def ensure_embedded(root: str, size: int = DEFAULT_SIZE["embedded"],
                    count: int = DEFAULT_COUNT["embedded"], seed: int = 0,
                    devices: Sequence[jax.Device] | None = None,
                    split: str = "heldout") -> list[EvalSet]:
  """The embedded sets A and B under `root`, built first if missing (what the evaluator
  scores when no COCO copy is at hand); of the training photos with split="train"."""
  return build("embedded", root, size=size, count=count, seed=seed, devices=devices,
               split=split)

"""Scoring a folder of restored images against a folder of references, matched by name.

What `tip-eval --pred DIR --ref DIR` runs, so that any method's outputs (StableSR,
DiffBIR, SUPIR, ...) are measured by the same code as ours. Files pair up by stem
(`0001.png` in one folder with `0001.jpg` in the other). Files that do not pair up,
cannot be read, or differ in size are skipped and named (`Problems`); they never stop
the run. Pairs of one size are scored in batches.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from tip_jax.errors import DataError, ImageError
from tip_jax.eval.scoring import Scorer, Tally
from tip_jax.image_io import IMAGE_SUFFIXES, read_rgb


@dataclasses.dataclass
class Problems:
  """Files left out, each with why (one line each for the user)."""

  lines: list[str] = dataclasses.field(default_factory=list)

  def add(self, name: str, why: str) -> None:
    self.lines.append(f"{name}: {why}")


def images_by_stem(folder: str) -> dict[str, str]:
  """{stem: path} of the images in `folder` (not recursive); a missing folder is a
  `DataError`."""
  if not os.path.isdir(folder):
    raise DataError(f"{folder}: no such folder")
  return {os.path.splitext(name)[0]: os.path.join(folder, name)
          for name in sorted(os.listdir(folder))
          if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")}


def read_captions(path: str) -> dict[str, str]:
  """{stem: caption} from a `.jsonl` file of lines with "id" and "caption" (a
  `tip-make-benchmark` index.jsonl), or any other file holding one JSON object
  ({"0001": "a cat", ...})."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise DataError(f"{path}: cannot read captions ({e.strerror or e})") from None
  if not path.endswith(".jsonl"):
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict):
      raise DataError(f"{path}: expected a JSON object mapping names to captions")
    return {os.path.splitext(str(k))[0]: str(v) for k, v in data.items()}
  out = {}
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      out[os.path.splitext(str(row["id"]))[0]] = str(row["caption"])
    except (json.JSONDecodeError, KeyError, TypeError):
      raise DataError(f"{path}:{number}: expected a JSON object with \"id\" and "
                      "\"caption\"") from None
  return out


def _pairs(pred: dict[str, str], ref: dict[str, str], problems: Problems
           ) -> list[tuple[str, str, str]]:
  for stem in sorted(set(pred) - set(ref)):
    problems.add(os.path.basename(pred[stem]), "no reference of that name")
  for stem in sorted(set(ref) - set(pred)):
    problems.add(os.path.basename(ref[stem]), "no prediction of that name")
  return [(stem, pred[stem], ref[stem]) for stem in sorted(set(pred) & set(ref))]


def _read_pairs(pairs: list[tuple[str, str, str]], problems: Problems, progress: bool
                ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
  for stem, pred_path, ref_path in tqdm(pairs, desc="scoring", unit="image",
                                        disable=not progress):
    try:
      pred, ref = read_rgb(pred_path), read_rgb(ref_path)
    except ImageError as e:
      problems.add(stem, str(e))
      continue
    if pred.shape != ref.shape:
      problems.add(stem, f"prediction is {pred.shape[1]}x{pred.shape[0]}, reference "
                   f"{ref.shape[1]}x{ref.shape[0]}")
      continue
    yield stem, pred, ref


def score_folders(pred_dir: str, ref_dir: str, scorer: Scorer, *,
                  captions: dict[str, str] | None = None, batch_size: int = 16,
                  progress: bool = True) -> tuple[dict[str, dict], Problems]:
  """({metric: {"mean", "count"}}, the files left out) for the pairs of two folders."""
  problems = Problems()
  pairs = _pairs(images_by_stem(pred_dir), images_by_stem(ref_dir), problems)
  if captions is not None:
    for stem, _, _ in pairs:
      if stem not in captions:
        problems.add(stem, "no caption (left out of clip_t)")
  tally = Tally(scorer)
  pending: dict[tuple[int, ...], list] = {}  # shape -> [(stem, pred, ref)]

  def flush(shape):
    group = pending.pop(shape)
    texts = None if captions is None else [captions.get(s) for s, _, _ in group]
    tally.add(np.stack([p for _, p, _ in group]), np.stack([r for _, _, r in group]), texts)

  for stem, pred, ref in _read_pairs(pairs, problems, progress):
    pending.setdefault(pred.shape, []).append((stem, pred, ref))
    if len(pending[pred.shape]) == batch_size:
      flush(pred.shape)
  for shape in list(pending):
    flush(shape)
  if not tally.count:
    raise DataError(f"no image pairs to score between {pred_dir} and {ref_dir}"
                    + (f" ({len(problems.lines)} file(s) left out)" if problems.lines else ""))
  return tally.result(), problems

"""`prepare`: an `inputs` input -> ArrayRecord shards in a folder, resumable shard by shard.

Each shard is written to a hidden partial file and renamed when complete, and the
folder's manifest (`tip_prepare.json`) records the input's signature and each shard's
counts, so a rerun keeps finished shards and refuses a different input. The
`tip-prepare` command (`tip_jax.cli.prepare`) documents the behaviour for users.
"""

from __future__ import annotations

import collections
import json
import math
import os

from tqdm import tqdm

from tip_jax.data import sources
from tip_jax.errors import DataError

MANIFEST = "tip_prepare.json"


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

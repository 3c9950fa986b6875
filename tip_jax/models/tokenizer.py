"""CLIP tokenization for SD prompts, via transformers' `CLIPTokenizer`.

SD 1.x and 2.x share CLIP's BPE vocabulary (49,408 tokens) and differ only in the pad
token: SD 1.5's folder pads with `<|endoftext|>` (49407), SD 2.x's with "!" (id 0),
mimicking OpenCLIP's zero padding. The text encoder sees padding (there is no mask),
so using the checkpoint's own tokenizer folder matters.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np

from tip_jax.errors import CheckpointError

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
_NUM_MERGES = 49152 - 256 - 2  # CLIP's vocabulary size before byte and special symbols
_REQUIRED = ("vocab.json", "merges.txt")
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# Bump when `write_tokenizer_folder` writes anything differently: the cached folder's
# name carries it, so an install never reads a folder an older one wrote.
_FOLDER_FORMAT = 1


def load_tokenizer(folder: str):
  """`CLIPTokenizer` from a tokenizer folder, or from a checkpoint root holding `tokenizer/`."""
  from transformers import CLIPTokenizer  # deferred: transformers is slow to import

  if not os.path.isdir(folder):
    raise CheckpointError(f"{folder}: no such tokenizer folder")
  nested = os.path.join(folder, "tokenizer")
  if not os.path.isfile(os.path.join(folder, "vocab.json")) and os.path.isdir(nested):
    folder = nested
  missing = [f for f in _REQUIRED if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    raise CheckpointError(f"{folder} is not a CLIP tokenizer folder: missing {', '.join(missing)}")
  return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def save_tokenizer(tokenizer, out_dir: str) -> None:
  """Copies the folder a `load_tokenizer` tokenizer was read from into `out_dir`: SD
  folders carry vocab.json and merges.txt, which transformers 5's `save_pretrained` no
  longer writes (it writes tokenizer.json alone, which `load_tokenizer` does not read)."""
  folder = tokenizer.name_or_path
  missing = [f for f in _REQUIRED if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    raise CheckpointError(f"{folder}: the tokenizer's folder lacks {', '.join(missing)} now")
  os.makedirs(out_dir, exist_ok=True)
  for name in sorted(os.listdir(folder)):
    if name in _REQUIRED or name.endswith(".json"):
      shutil.copyfile(os.path.join(folder, name), os.path.join(out_dir, name))


def tokenize(tokenizer, texts: Sequence[str], max_length: int = 77) -> np.ndarray:
  """(B, max_length) int32 ids: SOT, tokens, EOT, then the tokenizer's pad token.

  Over-long texts are cut to `max_length` with EOT kept as the last id.
  """
  if isinstance(texts, str):
    texts = [texts]
  ids = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True,
                  return_tensors="np")["input_ids"]
  return np.asarray(ids, dtype=np.int32)


def bundled_bpe_path() -> str:
  """CLIP's BPE table: package data of an installed wheel (`tip_jax/third_party/clip_bpe`,
  wherever pip put the package: `--user`, a venv, a zip of site-packages) or, in a source
  checkout and editable installs, the repository's `third_party/clip_bpe`."""
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  candidates = [
      os.path.join(package, "third_party", "clip_bpe", _BPE_FILE),
      os.path.join(package, "..", "third_party", "clip_bpe", _BPE_FILE),
  ]
  for path in candidates:
    if os.path.isfile(path):
      return os.path.normpath(path)
  raise CheckpointError(f"CLIP's {_BPE_FILE} is not bundled with this install (looked in "
                        f"{', '.join(map(os.path.normpath, candidates))})")


@functools.cache
def bundled_tokenizer(pad_token: str = EOT):
  """A `CLIPTokenizer` for the real CLIP vocabulary, from the bundled BPE table.

  For the tiny config and demos, which have no checkpoint folder. The folder is built
  once per machine under the temp dir (renamed into place, so concurrent workers agree).
  """
  with open(bundled_bpe_path(), "rb") as f:
    table = hashlib.sha256(f.read()).hexdigest()[:12]
  pad = "eot" if pad_token == EOT else f"{ord(pad_token[0]):x}"
  name = f"tip_jax_clip_tokenizer_v{_FOLDER_FORMAT}_{table}_{pad}"
  folder = os.path.join(tempfile.gettempdir(), name)
  if not os.path.isfile(os.path.join(folder, "merges.txt")):
    staging = tempfile.mkdtemp(prefix=name + "_")
    write_tokenizer_folder(bundled_bpe_path(), staging, pad_token)
    try:
      os.rename(staging, folder)
    except OSError:  # another process got there first; its folder is identical
      shutil.rmtree(staging, ignore_errors=True)
  return load_tokenizer(folder)


def bytes_to_unicode() -> dict[int, str]:
  """CLIP/GPT-2's reversible byte -> printable-character map, in vocabulary order.

  Printable Latin-1 bytes map to themselves and come first; the rest (controls,
  space, ...) map to code points 256, 257, ... in byte order and come after.
  """
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
               list(range(ord("®"), ord("ÿ") + 1)))
  mapping = {b: chr(b) for b in printable}
  extra = 0
  for b in range(256):
    if b not in mapping:
      mapping[b] = chr(256 + extra)
      extra += 1
  return mapping


def write_tokenizer_folder(bpe_gz_path: str, out_dir: str, pad_token: str = EOT) -> str:
  """Writes a `CLIPTokenizer` folder derived from CLIP's `bpe_simple_vocab_16e6.txt.gz`.

  Vocabulary order (which fixes every id): 256 byte symbols, the same with `</w>`,
  each of the 48,894 merges joined, then SOT (49406) and EOT (49407). `pad_token` is
  EOT for SD 1.x's tokenizer and "!" for SD 2.x's. Returns `out_dir`.
  """
  try:
    with gzip.open(bpe_gz_path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")
  except (OSError, EOFError) as e:
    raise CheckpointError(f"{bpe_gz_path}: not a readable gzip BPE table ({e})") from None
  merges = lines[1:1 + _NUM_MERGES]  # line 0 is a header
  if len(merges) != _NUM_MERGES or any(len(m.split()) != 2 for m in merges):
    raise CheckpointError(f"{bpe_gz_path}: expected a header then {_NUM_MERGES} merge lines "
                          "'a b'; this is not CLIP's bpe_simple_vocab_16e6.txt.gz")
  symbols = list(bytes_to_unicode().values())
  tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
  tokens += [SOT, EOT]
  vocab = {t: i for i, t in enumerate(tokens)}
  if len(vocab) != len(tokens):
    raise CheckpointError(f"{bpe_gz_path}: merges produce duplicate tokens")

  specials = {"bos_token": SOT, "eos_token": EOT, "unk_token": EOT, "pad_token": pad_token}
  config = dict(specials, tokenizer_class="CLIPTokenizer", model_max_length=77,
                do_lower_case=True, errors="replace", add_prefix_space=False)
  os.makedirs(out_dir, exist_ok=True)
  files = {"vocab.json": json.dumps(vocab, ensure_ascii=False),
           "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
           "tokenizer_config.json": json.dumps(config, indent=2),
           "special_tokens_map.json": json.dumps(specials, indent=2)}
  for name, text in files.items():
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
      f.write(text)
  return out_dir

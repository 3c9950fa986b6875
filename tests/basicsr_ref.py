"""Loads single BasicSR source files as references for the degradation parity tests.

BasicSR 1.4.2 is installed without its dependencies: `import basicsr` fails because
its package `__init__` pulls in torchvision. The modules the tests need
(`data/degradations.py`, `utils/diffjpeg.py`, `utils/img_process_util.py`) only import
numpy/scipy/cv2/torch, except that `degradations.py` imports torchvision's
`rgb_to_grayscale`. So each file is executed on its own, by path, with a stand-in for
that one function present only while it is imported (a fake `torchvision` left in
`sys.modules` would fool other libraries' availability checks).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import pathlib
import sys
import types
from typing import Iterator

import numpy as np
import pytest


def basicsr_root() -> pathlib.Path:
  """The installed `basicsr` package directory; skips the calling test if it is absent."""
  spec = importlib.util.find_spec("basicsr")  # locates without running __init__
  if spec is None or spec.origin is None:
    pytest.skip("basicsr is not installed: the BasicSR parity references are unavailable")
  return pathlib.Path(spec.origin).parent


def _rgb_to_grayscale(img, num_output_channels: int = 1):
  """torchvision's tensor `rgb_to_grayscale`: ITU-R 601 luma over dim -3, kept as a dim."""
  if img.shape[-3] == 1:
    gray = img.clone()
  else:
    r, g, b = img.unbind(dim=-3)
    gray = (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)
  if num_output_channels == 3:
    return gray.expand(*img.shape[:-3], 3, *img.shape[-2:])
  return gray


@contextlib.contextmanager
def _torchvision_shim() -> Iterator[None]:
  """Provides `torchvision.transforms.functional_tensor` for the duration of an import."""
  if importlib.util.find_spec("torchvision") is not None:
    yield
    return
  names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional_tensor")
  fakes = {name: types.ModuleType(name) for name in names}
  fakes["torchvision"].transforms = fakes["torchvision.transforms"]
  fakes["torchvision.transforms"].functional_tensor = fakes[names[2]]
  fakes[names[2]].rgb_to_grayscale = _rgb_to_grayscale
  sys.modules.update(fakes)
  try:
    yield
  finally:
    for name in names:
      sys.modules.pop(name, None)


@functools.lru_cache(maxsize=None)
def load_basicsr_module(relative_path: str) -> types.ModuleType:
  """Executes `basicsr/<relative_path>` as a standalone module and returns it.

  Skips the calling test if basicsr or torch is missing. `degradations.py` calls
  `np.seterr(divide="ignore", invalid="ignore")` at import; the previous numpy error
  state is restored, so wrap calls that divide by zero (`circular_lowpass_kernel` at
  r = 0) in `np.errstate` instead.
  """
  path = basicsr_root() / relative_path
  if not path.is_file():
    pytest.skip(f"{path} is missing from the installed basicsr")
  pytest.importorskip("torch")
  pytest.importorskip("cv2")
  name = "basicsr_ref_" + relative_path.removesuffix(".py").replace("/", "_")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  errors = np.geterr()
  with _torchvision_shim():
    try:
      spec.loader.exec_module(module)
    finally:
      np.seterr(**errors)
  return module

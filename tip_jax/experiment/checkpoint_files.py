"""The files of a checkpoint on disk: which one cannot be read and why, saves that never
finished, steps set aside, and why a write failed — each said in one line; and keeping
the threads a failed save ran on from saying it again (`quiet_background_failures`).

Orbax and TensorStore report a damaged checkpoint as a long traceback whose message
names an OCDBT folder (or nothing at all, for JSON); a failed write as an error in a
background thread. `checkpoint.py` turns these into one line with what this module
finds. Everything here works on paths and exception text, never on arrays.

A step folder holds one folder per item; outside the OCDBT data (`manifest.ocdbt`,
`ocdbt.process_*/`, `d/`) Orbax writes its metadata as JSON (`_METADATA`, `_sharding`,
`array_metadatas/*`, the config item's `metadata`, Grain's `process_*-of-*.json`).
"""

from __future__ import annotations

import json
import logging as pylogging
import os
import re
import sys
import warnings
from typing import Any, Callable, Iterable, Iterator

import tensorstore as ts
from absl import logging
from etils import epath

# Orbax's suffix for a step (or item) folder being written; renamed away once complete.
UNFINISHED = ".orbax-checkpoint-tmp"
SET_ASIDE = ".corrupt"
_JSON_NAMES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", "metadata")
# TensorStore's status codes for bytes that are missing, cut short or garbled (not for
# arrays whose shapes differ from the model's: those are not the checkpoint's fault).
_DAMAGED = re.compile(r"\b(OUT_OF_RANGE|DATA_LOSS|FAILED_PRECONDITION|NOT_FOUND): ")
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_MAX_REASON = 200


def one_line(text: str) -> str:
  """The first line of `text`, cut at 200 characters."""
  line = text.strip().splitlines()[0] if text.strip() else ""
  return line if len(line) <= _MAX_REASON else line[:_MAX_REASON] + "..."


def _chain(error: BaseException) -> Iterator[BaseException]:
  """`error` and the exceptions it was raised from or during."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _json_files(item: epath.Path) -> Iterator[epath.Path]:
  for path in sorted(item.iterdir()):
    if path.is_dir() and path.name == "array_metadatas":
      yield from sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file() and (path.name in _JSON_NAMES or path.name.endswith(".json")):
      yield path


def scan(step_dir: str, items: Iterable[str]) -> str | None:
  """The first of `items` in `step_dir` that cannot be read, as "file (why)"; None when
  each is there, its JSON parses and its OCDBT manifest lists.

  Cheap (metadata only): damaged array data shows up when it is read (`cause`). Checked
  before Orbax reads, because a damaged manifest makes TensorStore print hundreds of
  "Event loop is closed" tracebacks once Orbax has given up.
  """
  step = epath.Path(step_dir)
  for name in items:
    item = step / name
    if not item.is_dir():
      return f"{name}/ (missing: an unfinished copy, or not a TIP checkpoint)"
    for path in _json_files(item):
      try:
        json.loads(path.read_text())
      except (ValueError, UnicodeDecodeError) as e:
        return f"{path.relative_to(step)} ({one_line(str(e))})"
    if (item / "manifest.ocdbt").exists():
      url = str(item).rstrip("/") + "/"
      try:
        ts.KvStore.open({"driver": "ocdbt", "base": url if "://" in url else f"file://{url}"}
                        ).result().list().result()
      except ValueError as e:
        damaged = _damaged(str(e), step)  # anything else is left for the real read to tell
        if damaged:
          return damaged
  return None


def _damaged(message: str, step: epath.Path) -> str | None:
  """"file (STATUS: why)" for a TensorStore message about damaged bytes under `step`."""
  first = message.strip().splitlines()[0] if message.strip() else ""
  status = _DAMAGED.search(first)
  paths = [p for p in re.findall(r'"([^"]+)"', first)
           if p.rstrip("/").startswith(str(step).rstrip("/") + "/")]
  if not status or not paths:
    return None
  where = os.path.relpath(paths[-1].rstrip("/"), str(step))
  if paths[-1].endswith("/"):
    where += "/"
  array = re.search(r'Error reading "([^"]+)/[^/"]*" in OCDBT', first)
  if array:
    where += f" array {array.group(1)}"
  why = first.rsplit('": ', 1)[-1]  # the text after the last quoted name
  return f"{where} ({status.group(1)}: {one_line(why)})"


def cause(error: BaseException, step_dir: str, items: Iterable[str]) -> str | None:
  """What in `step_dir` made reading it raise `error`, as "file (why)"; None when
  `error` is not about damaged or missing files (shapes that do not match the config, a
  bug), which must not be blamed on the checkpoint."""
  step = epath.Path(step_dir)
  for e in _chain(error):
    if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)):
      return scan(step_dir, items)  # None: not one of this checkpoint's files
    if isinstance(e, FileNotFoundError) and str(e.filename or "").startswith(f"{step}/"):
      return f"{os.path.relpath(str(e.filename), str(step))} (missing)"
    if isinstance(e, KeyError) and "was not found in the checkpoint" in str(e):
      return scan(step_dir, items)
    found = _damaged(str(e), step)
    if found:
      return found
  return None


def set_aside(step_dir: str) -> str:
  """Renames `step_dir` to `<step>.corrupt` (`.corrupt-2`, ... if taken), out of
  Orbax's sight: retention does not count it, nothing deletes it, a person can look."""
  step = epath.Path(step_dir)
  target, n = step.parent / f"{step.name}{SET_ASIDE}", 1
  while target.exists():
    n += 1
    target = step.parent / f"{step.name}{SET_ASIDE}-{n}"
  step.rename(target)
  return str(target)


def remove_unfinished(root: str) -> None:
  """Deletes from `root` the step folders of saves that never completed (a crash or a
  full disk during the save), logging each."""
  folder = epath.Path(root)
  if not folder.is_dir():
    return
  for path in sorted(folder.iterdir()):
    if path.is_dir() and UNFINISHED in path.name:
      logging.warning("removing %s: a checkpoint save that never completed", path)
      path.rmtree()


def write_failure(error: BaseException) -> str | None:
  """"no space left on device", "permission denied", ... when `error` (or what it was
  raised from) is the operating system refusing a write; None otherwise."""
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno:
      return os.strerror(e.errno).lower()
    code = _OS_ERROR_CODE.search(str(e))
    if code:
      return os.strerror(int(code.group(1))).lower()
  return None


def size_text(nbytes: int) -> str:
  return f"~{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"~{nbytes / 1e6:.3g} MB"


_ORBAX = f"{os.sep}orbax{os.sep}"


def _orbax_frames(tb: Any, marker: str = _ORBAX) -> bool:
  """Whether traceback `tb` passes through Orbax's code. Reads no module globals (an
  unraisable exception can come while the interpreter shuts down and clears them)."""
  while tb is not None:
    if marker in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


def _through_orbax(record: pylogging.LogRecord) -> bool:
  return _orbax_frames(record.exc_info[2] if record.exc_info else None) or (
      _ORBAX in record.pathname)


class _OrbaxTracebacksOff(pylogging.Filter):
  """Log records about a failed checkpoint read or write: Orbax's own lose their
  traceback and go to the log file only (INFO; the failure is the job's last line);
  asyncio's about the siblings of a failed task or future ("... exception was never
  retrieved", at exit) go: the failure itself was raised to the caller."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if not record.exc_info:
      return True
    if record.name == "asyncio":
      return not (_through_orbax(record) or UNFINISHED in str(record.exc_info[1]))
    if _through_orbax(record):
      record.exc_info, record.exc_text = None, None
      record.levelno, record.levelname = pylogging.INFO, "INFO"
    return True


class _AftermathOff:
  """An unraisable-exception hook that drops what a failed save leaves for later:
  TensorStore's "Event loop is closed" for reads and writes that finish after Orbax
  gave up, and the errors of Orbax's abandoned coroutines when they are collected (at
  exit: "ImportError: sys.meta_path is None", one per array fragment in flight)."""

  def __init__(self, previous: Callable[[Any], None]):
    self.previous = previous
    self.orbax_frames = _orbax_frames  # bound now: module globals may be gone at exit

  def __call__(self, info: Any) -> None:
    closed_loop = (isinstance(info.exc_value, RuntimeError)
                   and str(info.exc_value) == "Event loop is closed")
    if not (closed_loop or self.orbax_frames(info.exc_traceback)):
      self.previous(info)


_TRACEBACKS_OFF = _OrbaxTracebacksOff()


class _ReadOnlyNoticesOff(pylogging.Filter):
  """Orbax's two warnings on opening a checkpoint manager read-only ("...read_only=True,
  setting save_interval_steps=0", "Given directory is read only=..."): the evaluator and
  the restorer open it so on purpose, and a person reading them would look for a fault."""

  NOTICES = ("CheckpointManagerOptions.read_only=True", "Given directory is read only")

  def filter(self, record: pylogging.LogRecord) -> bool:
    return not (_ORBAX in record.pathname and str(record.msg).startswith(self.NOTICES))


_READ_ONLY_OFF = _ReadOnlyNoticesOff()


def quiet_read_only_notices() -> None:
  """Drops `_ReadOnlyNoticesOff`'s two warnings for the rest of the process. Idempotent."""
  logger = pylogging.getLogger("absl")
  if _READ_ONLY_OFF not in logger.filters:
    logger.addFilter(_READ_ONLY_OFF)


def quiet_background_failures() -> None:
  """For the rest of the process (the jobs' entry point calls it): a failed save or
  restore is reported once, by `checkpoint.save`, `wait` or `read_newest`, not again by
  the threads it ran on.

  Orbax logs each failure of its background threads with a traceback (kept on one
  line, as INFO: in the log file, off the console), asyncio those of its tasks nobody
  awaited any more (dropped; a dozen for one full disk, at exit), TensorStore reads and
  writes that finish after Orbax gave up print "RuntimeError: Event loop is closed"
  each, and Orbax's abandoned write coroutines fail when collected at exit (both
  dropped; 178 and 164 for one full disk), as are the warnings about its write
  coroutines a failed save never started ("coroutine '...write_fragment' was never
  awaited", at exit). Every other log record, unraisable exception and warning is
  untouched. Idempotent.
  """
  warnings.filterwarnings(
      "ignore", message=r"coroutine '.*\.write_fragment' was never awaited",
      category=RuntimeWarning)
  for name in ("absl", "asyncio"):
    logger = pylogging.getLogger(name)
    if _TRACEBACKS_OFF not in logger.filters:
      logger.addFilter(_TRACEBACKS_OFF)
  if not isinstance(sys.unraisablehook, _AftermathOff):
    sys.unraisablehook = _AftermathOff(sys.unraisablehook)

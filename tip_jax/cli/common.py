"""What every console script shares: the flags several define (once, here), `--help`,
failing with one line, and the image files of the paths a user gives.

Each script's module docstring starts with its usage and an example; `run` prints it
with the script's own flags for `-h`/`--help` and exits 0 (absl alone would show only
the flags of the `__main__` module, which for a console script is pip's wrapper, and
exit 1). A `TipError` from the script (a bad path, config, prompt, image or
checkpoint) becomes one line on stderr and exit status 1; any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from types import ModuleType
from typing import Callable, NoReturn, Sequence

from absl import app, flags, logging

from tip_jax.errors import TipError
from tip_jax.image_io import IMAGE_SUFFIXES

OUT = flags.DEFINE_string("out", None, "Output: the folder for tip-restore's PNGs and for "
                          "tip-make-benchmark's sets, the PNG file of tip-walk (default "
                          "walk.png) and tip-degrade (default degradations.png).")
SEED = flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives the same images.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing output files.")

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "-?")


def expand(inputs: list[str]) -> list[str]:
  """Files as given; folders -> their image files (by suffix, sorted, not recursive)."""
  out = []
  for path in inputs:
    if os.path.isdir(path):
      out += sorted(os.path.join(path, f) for f in os.listdir(path)
                    if f.lower().endswith(IMAGE_SUFFIXES)
                    and os.path.isfile(os.path.join(path, f)))
    else:
      out.append(path)
  return out


def fail(prog: str, message: str) -> NoReturn:
  sys.exit(f"{prog}: {message}")


def _logging_flags_given() -> bool:
  given = flags.FLAGS
  return bool(given.logtostderr or given.alsologtostderr or given["verbosity"].present)


def _not_asyncio(record: std_logging.LogRecord) -> bool:
  """asyncio's own errors are a library's internals, not the user's: when one read of a
  damaged checkpoint fails, Orbax's other reads fail too, and asyncio reports each
  unretrieved failure ("Future exception was never retrieved") whenever the garbage
  collector finds it, after or before the one line that says what is wrong."""
  return record.name != "asyncio"


def _warnings_to_console(prog: str) -> None:
  """Warnings and errors on the console, one line each, named for `prog` (asyncio's
  left out: `_not_asyncio`)."""
  console = std_logging.StreamHandler(sys.stderr)
  console.setLevel(std_logging.WARNING)
  console.setFormatter(std_logging.Formatter(f"{prog}: %(levelname)s: %(message)s"))
  console.addFilter(_not_asyncio)
  std_logging.getLogger().addHandler(console)


def log_to_file(prog: str, folder: str) -> str | None:
  """INFO logs (tip_jax's and every library's) go to a file in `folder`; the console keeps
  warnings and errors, one line each, so a person sees the progress bar and results.

  Skipped (absl's console logging as usual) when --logtostderr, --alsologtostderr or
  --verbosity is given. Returns the log file's path, or None.
  """
  if _logging_flags_given():
    return None
  os.makedirs(folder, exist_ok=True)
  handler = logging.get_absl_handler()
  handler.setLevel(std_logging.NOTSET)  # the file gets INFO even after `quiet_console`
  handler.use_absl_log_file(prog, folder)
  logging.set_stderrthreshold("fatal")  # the console handler below shows the warnings
  _warnings_to_console(prog)
  return os.path.join(folder, f"{prog}.INFO")


def quiet_console(prog: str) -> None:
  """For the tools without a workdir to log into (tip-restore, tip-walk, ...): INFO logs
  are dropped and the console keeps warnings and errors, one line each, so that a
  failure is the line a person reads, not the last of forty library lines. absl's
  console logging as usual with --logtostderr, --alsologtostderr or --verbosity."""
  if _logging_flags_given():
    return
  logging.get_absl_handler().setLevel(std_logging.CRITICAL + 1)
  _warnings_to_console(prog)


def _flag_module(module: ModuleType) -> str:
  """The name absl filed a module's flags under (a script run as `python -m` is
  `__main__`, which absl files under `sys.argv[0]`)."""
  return sys.argv[0] if module.__name__ == "__main__" else module.__name__


def help_text(doc: str, modules: Sequence[ModuleType]) -> str:
  """The usage (the script's docstring) and the help of its flags."""
  own = [flags.FLAGS.module_help(_flag_module(module)).strip() for module in modules]
  own = [text for text in own if text]
  sections = [doc.strip(), *(["flags:", *own] if own else []),
              "Try --helpfull for every flag, absl's and JAX's included."]
  return "\n\n".join(sections)


def run(main: Callable[[list[str]], None], prog: str, doc: str,
        modules: Sequence[ModuleType], quiet: bool = True) -> None:
  """`app.run(main)` with this package's `--help` and `TipError` handling (see above);
  `quiet`: INFO logs off the console (`quiet_console`; tip-train logs to its workdir
  instead)."""
  argv = sys.argv[: sys.argv.index("--")] if "--" in sys.argv else sys.argv
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    print(help_text(doc, modules))
    sys.exit(0)

  def guarded(args: list[str]) -> None:
    if quiet:
      quiet_console(prog)
    try:
      main(args)
    except TipError as e:
      fail(prog, str(e))

  app.run(guarded)

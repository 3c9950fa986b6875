"""The console of the CLIs: warnings and errors one line each, asyncio's internals left out."""

import logging as std_logging

from absl import logging

from tip_jax.cli import common


def test_the_console_shows_warnings_but_not_asyncio_s_unretrieved_futures(monkeypatch, capsys):
  monkeypatch.setattr(common, "_logging_flags_given", lambda: False)
  root = std_logging.getLogger()
  handlers, absl_level = list(root.handlers), logging.get_absl_handler().level
  try:
    common.quiet_console("tip-x")
    std_logging.getLogger("asyncio").error("Future exception was never retrieved")
    std_logging.getLogger("tip_jax.some_module").warning("a warning for the user")
    std_logging.getLogger("tip_jax.some_module").info("an INFO log")
  finally:
    for handler in root.handlers[len(handlers):]:
      root.removeHandler(handler)
    logging.get_absl_handler().setLevel(absl_level)
  assert capsys.readouterr().err.splitlines() == ["tip-x: WARNING: a warning for the user"]

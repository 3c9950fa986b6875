"""The layer contract (`.importlinter`): no module imports from a layer above its own."""

import pathlib
import sys
import textwrap

from importlinter import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_no_upward_imports(monkeypatch):
  monkeypatch.chdir(ROOT)
  assert cli.lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True) == 0


def test_an_upward_import_breaks_the_contract(tmp_path, monkeypatch):
  """The same contract on a copy of the package with models importing restore fails."""
  package = tmp_path / "tip_jax"
  for path in (ROOT / "tip_jax").rglob("*.py"):
    target = package / path.relative_to(ROOT / "tip_jax")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(path.read_text())
  with open(package / "models" / "params.py", "a") as f:
    f.write(textwrap.dedent("""
        from tip_jax import restore  # an upward import
        """))
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  for name in [m for m in sys.modules if m == "tip_jax" or m.startswith("tip_jax.")]:
    monkeypatch.delitem(sys.modules, name)  # find_spec must see the copy
  assert cli.lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True) == 1

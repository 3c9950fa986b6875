"""notebooks/tip_demo.ipynb, executed top to bottom on CPU (nbclient, a fresh kernel)
against a tiny checkpoint trained for 2 steps, as a user runs it: the three modes and
the prompt-space walk come out as images."""

import base64
import io
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from tests.fixtures.checkpoint import tiny_checkpoint  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "tip_demo.ipynb"
SIDE = 32   # the fixture's training crops: no tiling, one small program per layout


def test_notebook_is_stored_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  assert "parameters" in code[0].metadata.get("tags", [])


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_cpu(tiny_checkpoint, monkeypatch):  # noqa: F811
  monkeypatch.setenv("TIP_DEMO_CHECKPOINT", tiny_checkpoint)
  monkeypatch.setenv("TIP_DEMO_STEPS", "2")
  monkeypatch.setenv("TIP_DEMO_MAX_SIDE", str(SIDE))
  monkeypatch.setenv("PYTHONPATH", str(ROOT))   # this checkout's tip_jax in the kernel
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

  text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
  assert "devices: [CpuDevice(id=0)" in text
  assert f"{tiny_checkpoint}: trained on {SIDE}-pixel crops" in text
  assert f"coffee (scikit-image): {SIDE}x{round(400 * SIDE / 600)}" in text  # 600x400
  pngs = [Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"])))
          for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  # input | blind | semantic | task-specific | clean, then the 3x3 walk under its input.
  assert [im.width for im in pngs] == [5 * SIDE, 3 * SIDE]

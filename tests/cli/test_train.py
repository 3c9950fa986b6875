"""`tip-train` with `evals.after_training` (the tiny config's default): the final
checkpoint is scored on the held-out crops and the table printed, once."""

from __future__ import annotations

import shutil

from tests.eval.test_evaluator import EVAL_OVERRIDES
from tests.fixtures.checkpoint import tiny_checkpoint  # noqa: F401  (a fixture)
from tests.train.test_trainer import tiny_config
from tip_jax.cli import train as train_cli
from tip_jax.eval import evaluator


def test_the_final_checkpoint_is_scored_once(tiny_checkpoint, tmp_path, monkeypatch):  # noqa: F811
  workdir = tmp_path / "run"
  shutil.copytree(tiny_checkpoint, workdir)
  config = tiny_config(total_steps=2, **EVAL_OVERRIDES, **{"evals.after_training": True})
  *lines, table = train_cli._score_final(config, str(workdir), 2)
  folder = workdir / "eval" / "step_0000002"
  assert lines == [f"before/after grids (degraded | restored | clean): {folder}/*.png",
                   f"step 2 on the held-out photos (mode 'input' is the degraded input "
                   f"itself): {folder}/results.md"]
  rows = table.splitlines()
  assert rows[0] == "| set | mode | psnr | ssim | lpips | images |"
  modes = {row.split(" | ")[1] for row in rows[2:]}
  assert modes == {"input", *config.evals.modes}
  assert {p.name for p in folder.glob("*.png")} == {
      f"embedded_{kind}_32_{m}.png" for kind in ("param", "realesrgan")
      for m in config.evals.modes}
  # A second call (the command run again on a finished workdir) re-reads, not re-scores.
  monkeypatch.setattr(evaluator.Evaluator, "evaluate", lambda *a: 1 / 0)
  assert train_cli._score_final(config, str(workdir), 2)[-1] == table

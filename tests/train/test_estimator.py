"""The estimator task in the shared trainer (configs/estimator.py): it trains, logs its
loss parts, writes sample grids, resumes exactly, and exports the folder
`tip_jax.estimate.load` reads."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from tests.train.test_pretrain import scalar_tags
from tests.train.test_trainer import (ROOT, max_diff, params_of, subprocess_env,
                                      train_on_one_device)
from tip_jax.errors import CheckpointError
from tip_jax.estimate import load
from tip_jax.experiment import runs
from tip_jax.experiment.config import load_config

OVERRIDES = {"data.resolution": 32, "data.num_workers": 0, "batch_size": 8,
             "log_every_steps": 1, "checkpoint_every_steps": 2, "sample_every_steps": 0,
             "sample_images": 2, "optim.warmup_steps": 2, "optim.schedule": "constant",
             "estimator.widths": (4, 8), "estimator.head": 8}


def estimator_config(**overrides):
  return load_config(f"{ROOT / 'configs' / 'estimator.py'}:estimator",
                     {**OVERRIDES, **overrides})


@pytest.mark.slow
def test_the_estimator_trains_resumes_and_exports(tmp_path):
  straight = train_on_one_device(tmp_path / "straight",
                                 estimator_config(total_steps=4, sample_every_steps=4))
  assert (tmp_path / "straight" / "samples" / "step_0000004.png").is_file()
  assert {"loss", "blind_bce", "presence_bce", "strength_l1", "presence_accuracy/jpeg_quality",
          "samples/exact_prompts"} <= scalar_tags(tmp_path / "straight")
  train_on_one_device(tmp_path / "resumed", estimator_config(total_steps=2))
  resumed = train_on_one_device(tmp_path / "resumed", estimator_config(total_steps=4))
  a, b = params_of(straight), params_of(resumed)
  assert all(np.array_equal(a[k], b[k]) for k in a), max_diff(a, b)

  with pytest.raises(CheckpointError, match="an estimator folder"):
    runs.load_for_inference(str(tmp_path / "resumed"))
  out = tmp_path / "exported"
  proc = subprocess.run([sys.executable, "-m", "tip_jax.cli.export_backbone",
                         str(tmp_path / "resumed"), str(out)], env=subprocess_env(1),
                        capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["task"] == "estimator" and report["step"] == 4
  estimator = load(str(out))
  ema = flatten_dict(jax.device_get(resumed.ema_params))
  got = flatten_dict(estimator.params)
  assert all(np.array_equal(ema[k], got[k]) for k in ema)
  assert estimator.spec.crop == 32 and estimator.spec.trained["step"] == 4
  assert estimator.spec.trained["config"] == "configs/estimator.py:estimator"
  image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
  assert isinstance(estimator.estimate(image).prompt(), str)

"""Backbone pretraining in the trainer (configs/prior.py): the VAE and the UNet resume
exactly like TIP training, log their losses, write their sample grids, and export to a
diffusers folder that a TIP config can point at."""

import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.fixtures.checkpoint import cut_array_data
from tests.train.test_trainer import (ROOT, WORKER, max_diff, params_of, subprocess_env,
                                      train_on_one_device)
from tip_jax.convert.diffusers import load_backbone
from tip_jax.errors import CheckpointError, ConfigError
from tip_jax.eval.evaluator import Evaluator
from tip_jax.experiment import runs
from tip_jax.experiment.config import load_config
from tip_jax.train.export import export_backbone

CONFIG_FILE = ROOT / "configs" / "prior.py"
OVERRIDES = {"model.geometry": "tiny", "data.resolution": 32, "data.num_workers": 0, "batch_size": 8,
             "log_every_steps": 1, "checkpoint_every_steps": 2, "sample_every_steps": 0,
             "sample_images": 2, "sample_steps": 2, "optim.warmup_steps": 2,
             "optim.schedule": "constant"}


def prior_config(base: str, **overrides):
  return load_config(f"{CONFIG_FILE}:{base}", {**OVERRIDES, **overrides})


def scalar_tags(workdir: Path) -> set[str]:
  events = EventAccumulator(str(next(workdir.glob("events.out.tfevents.*"))))
  events.Reload()
  return set(events.Tags()["tensors"])


@pytest.mark.slow
# Reading the damaged step abandons Orbax's other reads, whose coroutines complain when
# collected (the scripts drop that: checkpoint_files.quiet_background_failures).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_vae_pretraining_resumes_bitwise_after_sigkill_and_exports(tmp_path):
  """4 steps straight (with a reconstruction grid at step 4) == 2 steps, SIGKILL after
  the step-2 checkpoint, restart to 4. The export carries the EMA VAE and the latent
  scaling factor measured on training crops. With step 4's arrays then cut short, the
  export names the file and the trainer resumes from step 2, again bitwise."""
  straight = train_on_one_device(tmp_path / "straight",
                                 prior_config("vae", total_steps=4, sample_every_steps=4))
  assert (tmp_path / "straight" / "samples" / "step_0000004.png").is_file()
  assert {"loss", "l1", "lpips", "kl", "grad_norm", "samples/psnr"} <= scalar_tags(
      tmp_path / "straight")

  killed = tmp_path / "killed"
  flags = [f"--config={CONFIG_FILE}:vae"] + [f"--config.{k}={v}" for k, v in
                                             {**OVERRIDES, "total_steps": 4}.items()]
  proc = subprocess.run([sys.executable, str(WORKER), *flags, f"--workdir={killed}",
                         "--kill_after_save=2", "--devices=1"], env=subprocess_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  resumed = train_on_one_device(killed, prior_config("vae", total_steps=4))
  a, b = params_of(straight), params_of(resumed)
  assert all(np.array_equal(a[k], b[k]) for k in a), max_diff(a, b)

  with pytest.raises(CheckpointError, match="a vae pretraining run, not a TIP one"):
    runs.load_for_inference(str(killed))
  out = tmp_path / "backbone"
  report = export_backbone(str(killed), str(out))
  assert report["task"] == "vae" and report["step"] == 4
  exported = load_backbone(str(out))
  assert exported.scaling_factor == pytest.approx(report["scaling_factor"])
  assert 0.05 < exported.scaling_factor < 20
  ema = flatten_dict(jax.device_get(resumed.ema_params))
  got = flatten_dict(exported.vae.params)
  assert all(np.array_equal(ema[k], got[k]) for k in ema)
  # The command line on a folder that exists: one line, exit 1.
  again = subprocess.run([sys.executable, "-m", "tip_jax.cli.export_backbone", str(killed),
                          str(out)], env=subprocess_env(1), capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
  assert again.returncode == 1 and "Traceback" not in again.stderr
  assert again.stderr.strip().splitlines()[-1].endswith("pass --overwrite to replace its files")

  cut_array_data(killed / "checkpoints" / "4")
  with pytest.raises(CheckpointError, match=rf"^checkpoint step 4 in {killed}/checkpoints "
                     r"cannot be read: ema_params/ array \S+ \(OUT_OF_RANGE: "):
    runs.load_pretrained_backbone(str(killed))
  redone = train_on_one_device(killed, prior_config("vae", total_steps=4))
  a, b = params_of(straight), params_of(redone)
  assert all(np.array_equal(a[k], b[k]) for k in a), max_diff(a, b)
  assert (killed / "checkpoints" / "4.corrupt").is_dir()


@pytest.mark.slow
def test_unet_pretraining_samples_and_exports_a_backbone_tip_reads(tmp_path):
  """Two text-to-image steps on the seeded random backbone, a sample grid, then the
  exported folder: the EMA UNet, the backbone's own VAE and text encoder, its
  prediction type; a TIP config then builds on it."""
  workdir = tmp_path / "unet"
  config = prior_config("unet", total_steps=2, sample_every_steps=2,
                        **{"model.backbone": "random", "unet.prediction_type": "v_prediction"})
  state = train_on_one_device(workdir, config)
  assert (workdir / "samples" / "step_0000002.png").is_file()
  assert {"loss", "grad_norm", "samples"} <= scalar_tags(workdir)
  with pytest.raises(ConfigError, match="the evaluator scores TIP runs"):
    Evaluator(config, str(workdir))

  out = tmp_path / "backbone"
  report = export_backbone(str(workdir), str(out))
  assert report["task"] == "unet" and report["prediction_type"] == "v_prediction"
  exported = load_backbone(str(out))
  random = runs.load_pretrained_backbone(str(workdir)).backbone
  assert exported.prediction_type == "v_prediction"
  ema, got = flatten_dict(jax.device_get(state.ema_params)), flatten_dict(exported.unet.params)
  assert all(np.array_equal(ema[k], got[k]) for k in ema)
  for part in ("vae", "text_encoder"):  # untouched: the config's random backbone
    ours, theirs = flatten_dict(random.params[part]), flatten_dict(exported.params[part])
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours), part
  tip = load_config(f"{ROOT / 'configs' / 'tip.py'}:tiny", {"model.backbone": str(out)})
  from tip_jax.experiment import components
  assert components.build(tip).backbone.prediction_type == "v_prediction"

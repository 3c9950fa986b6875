"""The TensorFlow-free TensorBoard writer: what it writes reads back in TensorBoard's own
reader as the TF2 summaries CLU's writer made (scalars and images as tensors with their
plugins, the config as hparams), and the training and evaluation jobs import no
TensorFlow."""

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from tip_jax.experiment.summaries import SummaryWriter


def _events(logdir) -> EventAccumulator:
  (path,) = logdir.glob("events.out.tfevents.*")
  events = EventAccumulator(str(path), size_guidance={"tensors": 0})
  events.Reload()
  return events


def test_scalars_images_and_hparams_read_back(tmp_path):
  writer = SummaryWriter(str(tmp_path))
  writer.write_hparams({"optim.lr": 1e-3, "model.geometry": "mini", "ema": True, "steps": 3})
  writer.write_scalars(5, {"loss": 0.25, "steps_per_s": np.float64(2.5)})
  writer.write_scalars(10, {"loss": 0.125})
  grid = np.random.default_rng(0).integers(0, 256, (2, 6, 9, 3), dtype=np.uint8)
  writer.write_images(10, {"samples": grid, "one": grid[0]})
  writer.close()

  events = _events(tmp_path)
  loss = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
          for e in events.Tensors("loss")]
  assert loss == [(5, 0.25), (10, 0.125)]
  assert events.SummaryMetadata("loss").plugin_data.plugin_name == "scalars"
  (image,) = events.Tensors("samples")
  assert events.SummaryMetadata("samples").plugin_data.plugin_name == "images"
  width, height, *pngs = tensor_util.make_ndarray(image.tensor_proto)
  assert (int(width), int(height)) == (9, 6)
  np.testing.assert_array_equal(np.stack([np.asarray(Image.open(io.BytesIO(p))) for p in pngs]),
                                grid)
  assert len(tensor_util.make_ndarray(events.Tensors("one")[0].tensor_proto)) == 3
  assert "_hparams_/session_start_info" in events.Tags()["tensors"]


def test_other_processes_only_log(tmp_path):
  writer = SummaryWriter(str(tmp_path), write=False)
  writer.write_hparams({"a": 1})
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_images(1, {"x": np.zeros((1, 2, 2, 3), np.uint8)})
  writer.flush()
  writer.close()
  assert not list(tmp_path.iterdir())


def test_float_images_are_refused(tmp_path):
  writer = SummaryWriter(str(tmp_path))
  with pytest.raises(TypeError, match="uint8"):
    writer.write_images(1, {"x": np.zeros((2, 2, 3), np.float32)})
  writer.close()


def test_training_and_evaluation_import_no_tensorflow(tmp_path):
  """TensorFlow costs every job ~6 s of start-up and only TFDS sources need it; writing
  goes through no `tensorboard.compat.tf` either (it imports TensorFlow when installed)."""
  code = ("import sys, numpy as np, tip_jax.cli.train, tip_jax.train.trainer, "
          "tip_jax.eval.evaluator\n"
          "from tip_jax.experiment.summaries import SummaryWriter\n"
          "w = SummaryWriter(sys.argv[1]); w.write_hparams({'a': 1}); w.write_scalars(1, {'b': 2})\n"
          "w.write_images(1, {'c': np.zeros((1, 2, 2, 3), np.uint8)}); w.close()\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu')))")
  done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "[]"

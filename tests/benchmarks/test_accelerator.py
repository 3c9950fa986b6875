"""benchmarks/accelerator.sh, the one command for a GPU machine, run end to end on this
CPU at a toy size (width 0.1, one resnet per level, 64²): both sides of each benchmark
run, and the merged JSON has every figure the README's accelerator table reads (MFU from
the peak given)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_accelerator_script_writes_every_figure(tmp_path):
  out = tmp_path / "accelerator.json"
  env = dict(os.environ, WIDTH="0.1", LAYERS="1", SIZE="64", TRAIN_BATCH="1", SAMPLE_BATCHES="2",
             STEPS="2", TRAIN_REPEATS="1", SAMPLE_REPEATS="1", DTYPE="float32",
             PEAK_TFLOPS="1", PATH=os.path.dirname(sys.executable) + os.pathsep +
             os.environ.get("PATH", ""))
  done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator.sh"), str(out)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(out.read_text())
  train = result["train_step"]
  assert train["ours_images_per_s"] > 0 and train["reference_images_per_s"] > 0
  detail = train["detail"]
  assert detail["ours_gflops_per_step"] > 0 and detail["reference_gflops_per_step"] > 0
  # MFU = FLOPs per step / median step time / peak (1 TFLOP/s here).
  assert abs(train["ours_mfu"] - detail["ours_gflops_per_step"] / 1e3
             / detail["ours_s_per_step"]) < 1e-3 + 0.05 * train["ours_mfu"]
  assert set(result["sampling"]) == {"batch_2"}
  sample = result["sampling"]["batch_2"]
  assert sample["ours_s_per_image"] > 0 and sample["reference_s_per_image"] > 0
  # Same weights, same noise: the final latents agree (float32, 2 guided steps).
  assert sample["detail"]["final_latent_max_abs_diff"] < 1e-3 * max(
      1.0, sample["detail"]["final_latent_max_abs"])
  assert train["detail"]["config"]["layers"] == 1 and sample["detail"]["config"]["layers"] == 1
  assert result["peak_bf16_tflops"] == 1.0 and result["machine"]["device_kind"] == "cpu"

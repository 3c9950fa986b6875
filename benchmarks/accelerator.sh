#!/usr/bin/env bash
# One command for a GPU machine: SD1.5's geometry (random weights), bf16, ours beside
# diffusers/PyTorch on the same chip, each benchmark in its own process:
#   - the TIP train step at 512² (images/s, our MFU against the chip's dense bf16 peak):
#     benchmarks/train_step.py
#   - a 50-step guided DDIM run at 512², batch 1 and 8 (s/image): benchmarks/sample.py
# and one JSON object with all three (plus the machine) written to OUT.
#
#   bash benchmarks/accelerator.sh [OUT.json]      # default accelerator.json
#
# About 8 minutes on one H100/H200 (most of it compiling). The environment shrinks it
# (the tests run it this way on a CPU): WIDTH (1), LAYERS (2: resnets per level, SD1.5's),
# SIZE (512), TRAIN_BATCH (8),
# SAMPLE_BATCHES ("1 8"), STEPS (50), TRAIN_REPEATS (20), SAMPLE_REPEATS (5), DTYPE
# (bfloat16), PEAK_TFLOPS (default: the device's entry in forward.PEAK_BF16_TFLOPS),
# QUERY_CHUNK (0: JAX's attention, cuDNN's fused kernel where it applies, rather than
# tip_jax's query-blocked attention, the CPU benchmarks' default).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(realpath -m "${1:-accelerator.json}")"
width="${WIDTH:-1}" layers="${LAYERS:-2}" size="${SIZE:-512}" dtype="${DTYPE:-bfloat16}"
parts="$(mktemp -d)"
trap 'rm -rf "$parts"' EXIT
cd "$here"
peak="${PEAK_TFLOPS:-$(python -c 'from forward import peak_bf16_tflops; print(peak_bf16_tflops())' 2>/dev/null)}"

echo "accelerator.sh: train step (width $width, ${size}², batch ${TRAIN_BATCH:-8}, $dtype)" >&2
python train_step.py --width "$width" --layers "$layers" --size "$size" --batch "${TRAIN_BATCH:-8}" \
  --dtype "$dtype" --repeats "${TRAIN_REPEATS:-20}" --peak_tflops "$peak" \
  --query-chunk "${QUERY_CHUNK:-0}" > "$parts/train.json"
for batch in ${SAMPLE_BATCHES:-1 8}; do
  echo "accelerator.sh: ${STEPS:-50}-step guided DDIM, batch $batch" >&2
  python sample.py --width "$width" --layers "$layers" --size "$size" --steps "${STEPS:-50}" --cfg \
    --batch "$batch" --dtype "$dtype" --repeats "${SAMPLE_REPEATS:-5}" \
    --query-chunk "${QUERY_CHUNK:-0}" > "$parts/sample_$batch.json"
done

python - "$parts" "$out" "$peak" <<'PY'
import glob, json, os, sys
parts, out, peak = sys.argv[1], sys.argv[2], float(sys.argv[3])
train = json.load(open(os.path.join(parts, "train.json")))
samples = {}
for path in sorted(glob.glob(os.path.join(parts, "sample_*.json"))):
  s = json.load(open(path))
  samples[f"batch_{s['config']['batch']}"] = s
result = {
    "train_step": {
        "ours_images_per_s": train["ours_images_per_s"],
        "reference_images_per_s": train["reference_images_per_s"],
        "ratio_ours_over_reference": train["ratio_ours_over_reference"],
        "ours_mfu": train["ours_mfu"], "reference_mfu": train["reference_mfu"],
        "ours_compile_s": train["ours_compile_s"], "detail": train},
    "sampling": {k: {"ours_s_per_image": v["ours_s_per_image"],
                     "reference_s_per_image": v["reference_s_per_image"],
                     "ratio_ours_over_reference": v["ratio_ours_over_reference"],
                     "ours_compile_s": v["ours_compile_s"], "detail": v}
                 for k, v in samples.items()},
    "peak_bf16_tflops": peak or None,
    "machine": train["machine"],
}
with open(out, "w") as f:
  json.dump(result, f, indent=2)
print(f"accelerator.sh: wrote {out}", file=sys.stderr)
PY
cat "$out"

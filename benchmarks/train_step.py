"""A whole TIP training step: tip_jax (the trainer's jitted step) vs a diffusers ControlNet
training step (PyTorch), same geometry, same machine.

    python benchmarks/train_step.py --width 0.2 --size 256 --batch 2 --repeats 20 --threads 1
    python benchmarks/train_step.py --width 1 --size 512 --batch 8 --dtype bfloat16 \
        --peak_tflops 989                     # SD1.5 on one H100 (989 = dense bf16 peak)

Ours is `tip_jax.train.step.make_train_step` built as the trainer builds it (configs/tip.py
sd15 through `tip_jax.experiment.setup` on a 1-device mesh: its shardings, placed frozen
params and `global_batch`) and fed a batch
shaped like the data pipeline's (uint8 crops, token ids, degradation parameters). Per
step it degrades x -> y on device, VAE-encodes x, draws t and noise, CLIP-encodes c_s and
c_r, runs the ControlNet (y concatenated, modulate_skip fusion) and the frozen UNet, MSE,
clips, AdamW, EMA. The reference does what diffusers' train_controlnet.py does per step:
VAE and CLIP encode (no grad, one prompt), add noise, ControlNet (y added, additive
residuals) and frozen UNet, MSE, backward through the ControlNet only, clip, AdamW; its
conditioning image comes ready-made, so `ours_degrade_s` times our degradation alone.
Every model is SD1.5's with its widths scaled by --width (UNet and VAE channels, the CLIP
tower's width; depths and vocabulary kept). Random weights. The sides alternate, one step
each, after a warm-up (ours: AOT compile, reported, then one step); medians are printed
as one JSON line. With --peak_tflops, each side's MFU: its matmul and convolution FLOPs
per step (ours read from the compiled program by `hlo_flops`, the reference's counted by
PyTorch's `FlopCounterMode` over one more step: the same convention; on a CPU PyTorch's
fused attention has no FLOP formula, so the reference's count there leaves it out) over
its median step time and the peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from config_step import host_batch
from forward import (add_threads_flag, geometry, limit_threads, machine, reference_device,
                     to_torch)
from hlo_flops import matmul_ops, total
from torch.utils.flop_counter import FlopCounterMode

from tip_jax.degrade import degrade, params_from_tree
from tip_jax.experiment import setup as setup_lib
from tip_jax.experiment.config import load_config
from tip_jax.models import backbone as backbone_lib
from tip_jax.models.clip_text import CLIPTextConfig
from tip_jax.models.vae import VAEConfig
from tip_jax.train import step as step_lib


def reduced(width: float, layers: int = 2):
  """SD1.5's UNet, VAE and CLIP text configs with every width scaled by `width`, and
  `layers` resnets per UNet and VAE level (SD1.5: 2)."""
  scale = lambda c, quantum: max(quantum, int(round(c * width / quantum)) * quantum)
  hidden = scale(768, 64)  # 64-wide heads, as in CLIP ViT-L/14
  text = dataclasses.replace(CLIPTextConfig.sd15(), hidden_size=hidden,
                             intermediate_size=4 * hidden, num_attention_heads=hidden // 64)
  vae = dataclasses.replace(VAEConfig.sd(), layers_per_block=layers, block_out_channels=tuple(
      scale(c, 32) for c in VAEConfig.sd().block_out_channels))
  return dataclasses.replace(geometry(width, layers), cross_attention_dim=hidden), vae, text


def build_experiment(args, configs):
  """(experiment, config, fresh state, device batch, host batch, the step function): the
  trainer's own setup of a random backbone of the reduced geometry."""
  backbone_lib.GEOMETRIES["bench"] = backbone_lib.Geometry(*((lambda c=c: c) for c in configs))
  config = load_config("configs/tip.py:sd15", {
      "model.backbone": "random", "model.geometry": "bench", "model.dtype": args.dtype,
      "model.attention_query_chunk": args.query_chunk, "data.resolution": args.size,
      "batch_size": args.batch, "mesh": {"data": 1, "fsdp": 1, "tensor": 1}})
  exp = setup_lib.setup(config, workdir="", devices=jax.devices()[:1])
  state = exp.init_state()
  local, prompts = host_batch(exp, config.seed, np.random.default_rng(0))
  batch = exp.global_batch(local)
  local["restoration_prompt"] = prompts  # host-only, as in the pipeline's batches
  train_step = step_lib.make_train_step(exp.task, config, exp.tx)
  return exp, config, state, batch, local, train_step


def build_ours(args, configs):
  """(one step -> loss, compiled step, compile s, jitted degradation alone, host batch,
  fusion)."""
  exp, config, state, batch, local, train_step = build_experiment(args, configs)
  dc = exp.degrade_config
  start = time.perf_counter()  # as the trainer compiles it: ahead of time, state donated
  compiled = jax.jit(train_step, out_shardings=(exp.state_shardings, None),
                     donate_argnums=(0,)).lower(state, exp.frozen, batch).compile()
  compile_s = time.perf_counter() - start
  frozen = exp.frozen
  degrade_fn = jax.jit(lambda b: degrade(b["image"].astype(jnp.float32) / 255,
                                         params_from_tree(b["degrade"], dc)))

  def run() -> float:
    nonlocal state
    state, metrics = compiled(state, frozen, batch)
    return float(jax.block_until_ready((state, metrics))[1]["loss"])

  return run, compiled, compile_s, lambda: degrade_fn(batch), local, config.model.fusion


def reference_models(configs, device: torch.device, weight_dtype: torch.dtype):
  """diffusers' UNet, ControlNet (training), VAE and transformers' CLIP at our geometry, the
  frozen three cast to `weight_dtype` as train_controlnet.py does."""
  import diffusers  # test/benchmark-only reference
  import transformers
  ucfg, vcfg, tcfg = configs
  torch.manual_seed(0)
  unet = diffusers.UNet2DConditionModel(
      block_out_channels=ucfg.block_out_channels, attention_head_dim=ucfg.attention_head_dim,
      cross_attention_dim=ucfg.cross_attention_dim, layers_per_block=ucfg.layers_per_block)
  controlnet = diffusers.ControlNetModel.from_unet(unet).to(device).train()
  levels = len(vcfg.block_out_channels)
  vae = diffusers.AutoencoderKL(
      block_out_channels=vcfg.block_out_channels, layers_per_block=vcfg.layers_per_block,
      down_block_types=("DownEncoderBlock2D",) * levels, latent_channels=vcfg.latent_channels,
      up_block_types=("UpDecoderBlock2D",) * levels, norm_num_groups=vcfg.norm_num_groups)
  text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**dataclasses.asdict(tcfg)))
  for frozen in (unet, vae, text):  # as the script: frozen, cast to the weight dtype
    frozen.requires_grad_(False).eval().to(device, weight_dtype)
  return unet, controlnet, vae, text


def build_reference(configs, local: dict, degraded: np.ndarray, dtype: str,
                    models: tuple | None = None):
  """diffusers' models at our geometry (`reference_models`, or `models` made by it on this
  device) and a training step."""
  import diffusers  # test/benchmark-only reference
  device = reference_device()
  weight_dtype = getattr(torch, dtype)
  unet, controlnet, vae, text = models or reference_models(configs, device, weight_dtype)
  scheduler = diffusers.DDPMScheduler()
  opt = torch.optim.AdamW(controlnet.parameters(), lr=5e-5, betas=(0.9, 0.999),
                          weight_decay=1e-2, eps=1e-8)
  pixels = to_torch(local["image"].astype(np.float32) / 127.5 - 1).to(device, weight_dtype)
  cond = to_torch(degraded).to(device, weight_dtype)
  ids = torch.from_numpy(local["semantic_ids"].astype(np.int64)).to(device)

  def step() -> float:
    with torch.no_grad():
      latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
      emb = text(ids)[0]
    noise = torch.randn_like(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(ids),), device=device)
    noisy = scheduler.add_noise(latents, noise, t)
    with torch.autocast(device.type, weight_dtype, enabled=dtype != "float32"):
      down, mid = controlnet(noisy, t, emb, cond, return_dict=False)
      pred = unet(noisy, t, emb, down_block_additional_residuals=[
          d.to(weight_dtype) for d in down], mid_block_additional_residual=mid.to(weight_dtype)
      ).sample
    loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
      torch.cuda.synchronize()
    return loss.item()

  return step, str(device)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=float, default=0.2, help="channel multiplier vs SD1.5")
  parser.add_argument("--size", type=int, default=256, help="image side in pixels")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--layers", type=int, default=2,
                      help="resnets per UNet and VAE level (SD1.5: 2)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--query-chunk", type=int, default=128,
                      help="model.attention_query_chunk (0 = off, the config's default)")
  add_threads_flag(parser)
  parser.add_argument("--peak_tflops", type=float, default=0.0,
                      help="the device's peak for --dtype, to print our MFU")
  args = parser.parse_args()
  # Both sides share one accelerator: JAX must not take 75% of its memory up front.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  limit_threads(args.threads)

  configs = reduced(args.width, args.layers)
  ours, compiled, compile_s, degrade_fn, local, fusion = build_ours(args, configs)
  ref_step, ref_device = build_reference(configs, local, np.asarray(degrade_fn()), args.dtype)

  def clock(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())  # the reference synchronises itself
    return time.perf_counter() - start

  losses = {"ours": ours(), "reference": ref_step()}  # warm-up: first-call allocations
  times = {"ours": [], "reference": [], "degrade": []}
  for _ in range(args.repeats):  # alternate, so both sides see the same machine load
    times["ours"].append(clock(ours))
    times["reference"].append(clock(ref_step))
    times["degrade"].append(clock(degrade_fn))
  ours_s, ref_s, degrade_s = (float(np.median(times[k])) for k in ("ours", "reference",
                                                                      "degrade"))
  flops = total(matmul_ops(compiled.as_text()))
  with FlopCounterMode(display=False) as counter:
    ref_step()
  ref_flops = float(counter.get_total_flops())
  mfu = lambda f, s: round(f / s / (args.peak_tflops * 1e12), 4) if args.peak_tflops else None  # noqa: E731
  ucfg, vcfg, tcfg = configs
  print(json.dumps({
      "benchmark": f"TIP train step vs diffusers ControlNet train step, {args.dtype}",
      "ours_s_per_step": round(ours_s, 3), "reference_s_per_step": round(ref_s, 3),
      "ratio_ours_over_reference": round(ours_s / ref_s, 3),
      "ours_images_per_s": round(args.batch / ours_s, 3),
      "reference_images_per_s": round(args.batch / ref_s, 3),
      "ours_degrade_s": round(degrade_s, 3),
      "ours_minus_degrade_s_per_step": round(ours_s - degrade_s, 3),
      "ratio_without_degrade": round((ours_s - degrade_s) / ref_s, 3),
      "ours_compile_s": round(compile_s, 1),
      "ours_gflops_per_step": round(flops / 1e9, 1),
      "reference_gflops_per_step": round(ref_flops / 1e9, 1),
      "ours_mfu": mfu(flops, ours_s), "reference_mfu": mfu(ref_flops, ref_s),
      "first_losses": {k: round(v, 4) for k, v in losses.items()},
      "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
      "config": {"unet_channels": ucfg.block_out_channels, "vae_channels": vcfg.block_out_channels,
                 "clip_width": tcfg.hidden_size, "size": args.size, "batch": args.batch,
                 "repeats": args.repeats, "dtype": args.dtype, "width": args.width,
                 "layers": args.layers,
                 "attention_query_chunk": args.query_chunk, "ours_fusion": fusion,
                 "threads": args.threads or None, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "degradations": list(local["restoration_prompt"]),
                 "reference_fusion": "additive", "reference_device": ref_device},
      "machine": machine(),
  }))


if __name__ == "__main__":
  main()

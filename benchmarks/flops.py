"""FLOPs of TIP's training step and sampling step against diffusers', same geometry.

    python benchmarks/flops.py --width 0.2 --size 256 --batch 2

What is counted: matmul and convolution FLOPs (2 x multiply-adds), the only thing PyTorch's
`torch.utils.flop_counter.FlopCounterMode` counts. Ours: the optimized HLO of each
compiled program, walked by `hlo_flops` (every dot and convolution XLA kept after CSE and
dead-code elimination, loop bodies times their trip count). Not `cost_analysis()`, which
adds elementwise work and counts a loop body once; its figure is printed for contrast.
Reference: `FlopCounterMode` around diffusers' code, with the explicit-matmul attention
(diffusers' `AttnProcessor`, transformers' "eager" CLIP attention): on CPU
`scaled_dot_product_attention` runs an op that `FlopCounterMode` has no formula for, so
its attention would count zero. The explicit form multiplies the same matrices, and its
backward, like ours, does not recompute the scores.

Training step: ours is the trainer's (`train_step.build_experiment`: configs/tip.py sd15 on
a random backbone of SD1.5's geometry with every width scaled by --width), the reference
diffusers' train_controlnet.py step of `train_step.build_reference`. Both VAE-encode the
clean image every step and both differentiate only the ControlNet (the frozen UNet only
back-propagates to its skips). Ours does more by design; each extra is measured on its own
and subtracted:
  degradation        `loss.device_batch` (x -> y on device; each random stage's costlier
                     branch, so an upper bound)
  second CLIP encode one `loss.encode_prompts` (c_r; the reference encodes one prompt)
  E' concatenated    our step with E'(y) concatenated to z_t (conv_in widened) minus the
                     same step with diffusers' E' (zero conv, added after conv_in)
  modulation         our step with gamma || beta convs (2C channels per site) minus the
                     same step with additive residuals (C)
  AdamW, clip, EMA   elementwise: no matmul FLOPs (XLA's elementwise count printed)
The remainder (ours minus the extras) is compared with the reference's total.

Sampling step: one DDIM step with classifier-free guidance (two model rows per image),
batch 1: `sampling.sample_latents` vs `sample.reference_denoise` (diffusers' ControlNet
pipeline). Ours runs the ControlNet once for both rows, which share its inputs (z_t, t,
c_r, y); diffusers gives each row its own prompt, so it runs it twice. The extras are E'
concatenated and the modulation, forward only. Also the cost of a step within a run (two
steps minus one): XLA hoists the loop-invariant E'(y) out of the step loop.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from torch.utils.flop_counter import FlopCounterMode

import hlo_flops
from forward import machine, to_torch  # first: it makes torchvision importable
from sample import reference_denoise
from train_step import build_experiment, build_reference, reduced, reference_models

from tip_jax import sampling
from tip_jax.diffusion import samplers
from tip_jax.experiment import loss as loss_lib
from tip_jax.experiment import state as state_lib
from tip_jax.experiment import tasks
from tip_jax.models import params as params_lib
from tip_jax.models.controlnet import ControlNetConfig, ControlNetModel
from tip_jax.train import step as step_lib

GIGA = 1e9
# (conditioning, fusion): TIP's ControlNet, TIP's without modulation, diffusers' ControlNet.
TIP, CONCAT_ADDITIVE, DIFFUSERS = ("concat", "modulate_skip"), ("concat", "additive"), \
    ("add", "additive")


def matmul_gflop(fn, *args) -> float:
  """Matmul + conv GFLOP of `fn` compiled for `args` (arrays or ShapeDtypeStructs)."""
  compiled = jax.jit(fn).lower(*args).compile()
  return hlo_flops.total(hlo_flops.matmul_ops(compiled.as_text())) / GIGA


def counted_gflop(fn) -> float:
  """GFLOP `FlopCounterMode` counts while `fn()` runs."""
  with FlopCounterMode(display=False) as counter:
    fn()
  return counter.get_total_flops() / GIGA


def variant(exp, kind: tuple[str, str]) -> tuple[ControlNetModel, object]:
  """The ControlNet of `kind` on our UNet, and an abstract TrainState for it."""
  cn = exp.components.controlnet
  cn = ControlNetModel(ControlNetConfig(unet=cn.config.unet, conditioning=kind[0],
                                        fusion=kind[1]), cn.options)
  state = jax.eval_shape(lambda p: state_lib.create(p, exp.tx), params_lib.param_shapes(cn))
  return cn, state


def ours_train(exp, config, state, batch, train_step) -> dict:
  """Our training step's GFLOP and each extra's (see the module docstring)."""
  compiled = jax.jit(train_step).lower(state, exp.frozen, batch).compile()
  steps = {TIP: hlo_flops.total(hlo_flops.matmul_ops(compiled.as_text())) / GIGA}
  for kind in (CONCAT_ADDITIVE, DIFFUSERS):  # the same step with another ControlNet
    cn, abstract = variant(exp, kind)
    task = tasks.build(config, dataclasses.replace(exp.components, controlnet=cn), exp.mesh,
                       exp.batch_axes, exp.degrade_config)
    fn = step_lib.make_train_step(task, config, exp.tx)
    steps[kind] = matmul_gflop(fn, abstract, exp.frozen, batch)
  models = exp.components
  blind = loss_lib.blind_prompt_ids(models)
  degrade = lambda b, s: loss_lib.device_batch(  # noqa: E731
      b, s, seed=config.seed, degrade_config=exp.degrade_config, mesh=exp.mesh,
      batch_axes=exp.batch_axes, blind_ids=blind)
  vae = models.backbone.vae.module
  clean = jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1

  def update(s, grads):
    finite = jnp.isfinite(optax.global_norm(grads))
    return state_lib.apply_gradients(s, grads, exp.tx, config.ema_decay, finite)

  optimizer = jax.jit(update).lower(state, state.params).compile()
  return {
      "total": steps[TIP],
      "xla_cost_analysis_all_ops": hlo_flops.cost_analysis_flops(compiled) / GIGA,
      "same_architecture_as_diffusers": steps[DIFFUSERS],
      "degradation": matmul_gflop(degrade, batch, state.step),
      "clip_encode_one": matmul_gflop(
          lambda f, ids: loss_lib.encode_prompts(models, f, ids, True), exp.frozen,
          batch["semantic_ids"]),
      "vae_encode": matmul_gflop(
          lambda p, x: vae.apply({"params": p}, x, method="encode"), exp.frozen["vae"], clean),
      "e_prime_concatenated": steps[CONCAT_ADDITIVE] - steps[DIFFUSERS],
      "modulation": steps[TIP] - steps[CONCAT_ADDITIVE],
      "adamw_clip_ema": float(hlo_flops.total(hlo_flops.matmul_ops(optimizer.as_text()))),
      "adamw_clip_ema_xla_elementwise": hlo_flops.cost_analysis_flops(optimizer) / GIGA,
  }


def ours_sample(exp, size: int) -> dict:
  """Guided DDIM steps of `sampling.sample_latents`, batch 1: one step per ControlNet kind,
  and two steps of TIP's (XLA hoists the loop-invariant E'(y) out of the step loop)."""
  backbone = exp.components.backbone
  unet = backbone.unet.module
  lat = size // 8
  layout = sampling.Layout((lat, lat), None, cfg=True, restoration_cfg=False)
  shape = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
  emb = shape(1, layout.rows, 77, backbone.text_encoder.module.config.hidden_size)

  def program(kind: tuple[str, str], steps: int) -> float:
    cn, _ = variant(exp, kind)
    params = {"unet": exp.frozen["unet"], "controlnet": params_lib.param_shapes(cn)}
    plan = samplers.make_plan(backbone.schedule(), steps, "ddim")
    compiled = sampling.sample_latents.lower(
        params, shape(1, lat, lat, unet.config.in_channels), shape(1, size, size, 3), emb, emb,
        plan, shape(3), unet=unet, controlnet=cn, layout=layout).compile()
    return hlo_flops.total(hlo_flops.matmul_ops(compiled.as_text())) / GIGA

  one = {kind: program(kind, 1) for kind in (TIP, CONCAT_ADDITIVE, DIFFUSERS)}
  two = program(TIP, 2)
  return {"total": one[TIP], "same_architecture_as_diffusers": one[DIFFUSERS],
          "e_prime_concatenated": one[CONCAT_ADDITIVE] - one[DIFFUSERS],
          "modulation": one[TIP] - one[CONCAT_ADDITIVE], "per_step_in_a_run": two - one[TIP]}


def explicit_attention(unet, controlnet, vae, text) -> None:
  """Attention as matmuls FlopCounterMode sees (see the module docstring)."""
  from diffusers.models.attention_processor import AttnProcessor
  for model in (unet, controlnet, vae):
    model.set_attn_processor(AttnProcessor())
  text.set_attn_implementation("eager")


def reference(configs, local: dict, degraded: np.ndarray, size: int) -> dict:
  models = reference_models(configs, torch.device("cpu"), torch.float32)
  explicit_attention(*models)
  unet, controlnet, vae, text = models
  step, _ = build_reference(configs, local, degraded, "float32", models=models)
  pixels = to_torch(local["image"].astype(np.float32) / 127.5 - 1)
  ids = torch.from_numpy(local["semantic_ids"].astype(np.int64))
  lat, width = size // 8, configs[2].hidden_size
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.standard_normal((1, 4, lat, lat), np.float32))
  states = torch.from_numpy(rng.standard_normal((2, 77, width), np.float32))
  cond = to_torch(np.repeat(degraded[:1], 2, 0))
  train_total = counted_gflop(step)
  with torch.no_grad():
    return {
        "train_total": train_total,
        "vae_encode": counted_gflop(lambda: vae.encode(pixels)),
        "clip_encode_one": counted_gflop(lambda: text(ids)),
        "sample_total": counted_gflop(lambda: reference_denoise(
            unet, controlnet, x, torch.tensor(500), states, cond, 2, 7.5)),
    }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=float, default=0.2, help="channel multiplier vs SD1.5")
  parser.add_argument("--size", type=int, default=256, help="image side in pixels")
  parser.add_argument("--batch", type=int, default=2, help="training batch")
  args = parser.parse_args()
  args.dtype, args.query_chunk = "float32", 0  # build_experiment's other settings
  start = time.perf_counter()
  configs = reduced(args.width)
  exp, config, state, batch, local, train_step = build_experiment(args, configs)
  train = ours_train(exp, config, state, batch, train_step)
  sample = ours_sample(exp, args.size)
  degraded = np.asarray(loss_lib.device_batch(
      batch, state.step, seed=config.seed, degrade_config=exp.degrade_config, mesh=exp.mesh,
      batch_axes=exp.batch_axes, blind_ids=loss_lib.blind_prompt_ids(exp.components)
  )["degraded"] / 2 + 0.5)
  ref = reference(configs, local, degraded, args.size)

  extras = {"degradation": train["degradation"], "second_clip_encode": train["clip_encode_one"],
            "e_prime_concatenated": train["e_prime_concatenated"],
            "modulation": train["modulation"], "adamw_clip_ema": train["adamw_clip_ema"]}
  remainder = train["total"] - sum(extras.values())
  sample_extras = {k: sample[k] for k in ("e_prime_concatenated", "modulation")}
  sample_remainder = sample["total"] - sum(sample_extras.values())
  r = lambda x: round(x, 3)  # noqa: E731
  ucfg, vcfg, tcfg = configs
  print(json.dumps({
      "benchmark": "matmul + conv GFLOP per step (2 x multiply-adds), ours vs diffusers",
      "train_step": {
          "ours": r(train["total"]), "reference": r(ref["train_total"]),
          "ours_extras": {k: r(v) for k, v in extras.items()},
          "ours_remainder": r(remainder),
          "remainder_ratio": r(remainder / ref["train_total"]),
          "ours_same_architecture_as_diffusers": r(train["same_architecture_as_diffusers"]),
          "common": {"vae_encode": {"ours": r(train["vae_encode"]), "reference":
                                    r(ref["vae_encode"])},
                     "clip_encode_one": {"ours": r(train["clip_encode_one"]),
                                         "reference": r(ref["clip_encode_one"])}},
          "ours_xla_cost_analysis_all_ops": r(train["xla_cost_analysis_all_ops"]),
          "adamw_clip_ema_xla_elementwise": r(train["adamw_clip_ema_xla_elementwise"]),
      },
      "sample_step": {
          "ours": r(sample["total"]), "reference": r(ref["sample_total"]),
          "ours_extras": {k: r(v) for k, v in sample_extras.items()},
          "ours_remainder": r(sample_remainder),
          "remainder_ratio": r(sample_remainder / ref["sample_total"]),
          "ours_same_architecture_as_diffusers": r(sample["same_architecture_as_diffusers"]),
          "ours_per_step_in_a_run": r(sample["per_step_in_a_run"]),
          "per_step_ratio": r(sample["per_step_in_a_run"] / ref["sample_total"]),
      },
      "config": {"unet_channels": ucfg.block_out_channels,
                 "vae_channels": vcfg.block_out_channels, "clip_width": tcfg.hidden_size,
                 "width": args.width, "size": args.size, "train_batch": args.batch,
                 "sample_batch": 1, "cfg_rows": 2, "dtype": "float32",
                 "ours_fusion": config.model.fusion,
                 "degradations": list(local["restoration_prompt"])},
      "seconds": round(time.perf_counter() - start, 1),
      "machine": machine(),
  }, indent=2))


if __name__ == "__main__":
  main()

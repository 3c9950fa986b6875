"""TIP training configs: `--config configs/tip.py:<base>[,<ablation>...]`.

Bases
  tiny   CPU: the prior shipped in the package (`model.backbone=embedded`, trained by
         configs/prior.py; or `=/path/to/sd`, or `=random`), the bundled training
         photos, 64² crops; then scores itself on the held-out photos. Minutes on a laptop.
           tip-train --config configs/tip.py:tiny --workdir /tmp/tip_tiny
  sd15   Stable Diffusion 1.5 from a local diffusers folder, 512², the paper's recipe.
           tip-train --config configs/tip.py:sd15 --workdir gs://bucket/tip_sd15 \
             --config.model.backbone=/data/sd15 \
             --config.data.source='arrayrecord:/data/webli/*.array_record'
  sd21   Stable Diffusion 2.1 (v-prediction, 768-pixel base; trained at 512² here).
           tip-train --config configs/tip.py:sd21 --workdir ... --config.model.backbone=/data/sd21

Every base has an `evals` block for the evaluator job, run beside the trainer with the
same config and workdir (README "Evaluation"):
           tip-train --mode=eval --config configs/tip.py:tiny --workdir /tmp/tip_tiny

Ablations (the paper's Tab. 5/6), appended to a base. One rule for the base: a spec
that names none (`""`, `controlnet_sr`, ...) uses `tiny`, the one that runs anywhere.
  controlnet_sr  additive fusion and no prompts: the ControlNet-SR baseline.
                   tip-train --config configs/tip.py:sd15,controlnet_sr --workdir ...
  no_params      restoration prompts name the degradations without their strengths.
                   tip-train --config configs/tip.py:sd15,no_params --workdir ...
  modulate_up    modulation on the skips and on the decoder features (Tab. 6, last row).
                   tip-train --config configs/tip.py:sd15,modulate_up --workdir ...

Sweeps, for the launchers (`launch/`, README "Pods: launching on TPU"): `sweep()` is the
full model and its three ablations on the launched base, `sweep_seeds()` three seeds;
each point is a trainer + evaluator pair with its own workdir.
           python -m launch.xm_launch --config configs/tip.py:sd15 --sweep=sweep ...
"""

from __future__ import annotations

import dataclasses

import ml_collections

from tip_jax.data.config import DataConfig
from tip_jax.errors import ConfigError

BASES = ("tiny", "sd15", "sd21")
ABLATIONS = ("controlnet_sr", "no_params", "modulate_up")


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "tip"                # what is trained: TIP's ControlNet (configs/prior.py
                                # pretrains a backbone's VAE or UNet in the same trainer)
  c.seed = 0
  c.total_steps = 100_000
  c.batch_size = 256            # global, over all hosts
  c.grad_accum_steps = 1        # the batch is split into this many sequential micro-batches

  c.model = ml_collections.ConfigDict()
  c.model.backbone = ""         # a diffusers SD folder, or "random" (a random backbone of
                                # `geometry`); must be given: nothing is random by default
  c.model.geometry = "sd15"     # tiny | sd15 | sd21 (shapes the random backbone)
  c.model.fusion = "modulate_skip"
  # How the ControlNet sees y: "concat" is the paper's E' (a small conv stack, from
  # scratch); "vae" starts E' as a copy of the VAE's encoder (not the paper's).
  c.model.conditioning = "concat"
  # E' widths in place of ControlNet's (16, 32, 96, 256), the paper's (`concat` only):
  # four, from an 8x VAE's full resolution to its latents, truncated as ControlNet's are
  # to the VAE's downsampling (a 4x VAE keeps the last three). () is ControlNet's.
  c.model.conditioning_widths = ()
  # Which timesteps the samplers visit (trainer's grids, evaluator, restorer): "" keeps
  # the backbone's scheduler config (SD 1.5's: DDIM "leading", whose first step starts
  # pure noise at t = T - T/steps + 1), or "leading" | "trailing" | "linspace" (Lin et
  # al. 2023, Table 2). Training draws every t either way; the paper does not say.
  c.model.timestep_spacing = ""
  c.model.dtype = "bfloat16"    # compute dtype of every model
  c.model.remat_policy = ""     # "" or a jax.checkpoint_policies name, e.g. nothing_saveable
  c.model.attention_impl = ""   # "" (JAX picks), "xla" or "cudnn"
  # > 0: attention in query blocks of this size (tip_jax.models.attention: less memory;
  # on CPU 3-4x faster attention, 128 for 1024 tokens, 64 for 4096); 0: JAX's attention.
  c.model.attention_query_chunk = 0

  # Which prompts the models see; the ControlNet-SR ablation turns both off.
  c.prompts = ml_collections.ConfigDict()
  c.prompts.semantic = True
  c.prompts.restoration = True

  # The input pipeline's fields and defaults are DataConfig's (tip_jax/data/config.py).
  c.data = ml_collections.ConfigDict(dataclasses.asdict(DataConfig()))
  c.data.num_workers = 8        # Grain worker processes per host (0 = in the trainer)
  c.data.read_threads = 4

  c.degrade = ml_collections.ConfigDict()
  c.degrade.realesrgan_prob = 0.5
  c.degrade.with_values_prob = 0.5  # restoration prompts that carry strengths
  c.degrade.loop = "auto"
  # Real-ESRGAN vs parameterised: drawn per "example" (every batch holds both kinds, the
  # same expected share: lower-variance gradients at small batches) or per "step" (the
  # paper's "in 50% iterations"; the whole batch is one kind). All configs use "example".
  c.degrade.mix = "example"

  # The denoising loss (tip_jax.experiment.loss TIMESTEPS, WEIGHTINGS): how each
  # example's timestep is drawn ("uniform" is Stable Diffusion's and the paper's; "cubic"
  # draws noisy steps more often, where a sampler sets the layout) and how its squared
  # error is weighted ("none", the paper's; "truncated_snr": max(ε, x0) error).
  c.loss = ml_collections.ConfigDict()
  c.loss.timesteps = "uniform"
  c.loss.weighting = "none"

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 5e-5             # peak
  c.optim.warmup_steps = 1000
  c.optim.schedule = "constant"  # after warm-up: constant | cosine (to 0 at total_steps)
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 1e-2
  c.optim.clip_norm = 1.0
  c.ema_decay = 0.9999
  # A step with a non-finite loss or gradient is skipped (and counted); more than this
  # many in a row stop the run with one line (0 = never), checked at log steps.
  c.max_consecutive_skips = 20

  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.sharding_rules = "fsdp"     # fsdp | tensor (see tip_jax.train.sharding)

  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3        # the latest N ...
  c.keep_every_steps = 10_000   # ... plus every K-th step
  c.async_checkpoints = True
  c.sample_every_steps = 5000   # image grids: degraded | restored | clean
  c.sample_images = 4
  c.sample_steps = 20           # DDIM steps for the grids
  c.profile_steps = 5           # steps traced by the profiler after the first log

  # The evaluator job (`tip-train --mode=eval`, same config and workdir as the trainer).
  c.evals = ml_collections.ConfigDict()
  # Test sets: `tip-make-benchmark` folders (e.g. /data/tip_bench/coco_param and
  # /data/tip_bench/coco_realesrgan for Tab. 1), or "embedded" (the scikit-image photos,
  # built on demand into workdir/eval/sets: offline, small).
  c.evals.sets = ("embedded",)
  c.evals.embedded_count = 16   # crops of the embedded set
  c.evals.embedded_size = 0     # its side in pixels; 0 = data.resolution
  # Prompt modes (Tab. 1/5), each (semantic, restoration): semantic "caption" | "";
  # restoration "values" | "type_only" | "blind" ("Remove all degradation") | "".
  # A third element adds inference options the paper's sampler does not have, e.g.
  # "strength=0.3,color_fix=wavelet" (tip_jax.eval.modes.SAMPLER_OPTIONS).
  c.evals.modes = ml_collections.ConfigDict({
      "full": ("caption", "values"),      # Tab. 1 "Ours"
      "semantic": ("caption", ""),        # Tab. 5 "semantic only"
      "restoration": ("", "values"),
      "blind": ("", "blind"),             # Tab. 1 "Ours w/o text"
      "none": ("", ""),                   # Tab. 5 "prompts off"
  })
  c.evals.steps = 50            # DDIM steps (the paper does not say; 50 is SD's default)
  c.evals.guidance = 4.0        # classifier-free guidance weight on c_s
  c.evals.batch_size = 8
  c.evals.seed = 0
  c.evals.metrics = "psnr,ssim,lpips,fid,clip_i,clip_t"
  c.evals.lpips_net = "alex"    # LPIPS v0.1 AlexNet (the common default) | vgg
  c.evals.inception = ""        # converted Inception weights (tip-convert-inception); "" = no FID
  c.evals.clip = ""             # a local HF CLIP folder (ViT-L/14); "" = no CLIP-I / CLIP-T
  c.evals.crop_border = 0       # PSNR/SSIM: RGB, no crop (the paper's "for reference")
  c.evals.y_channel = False
  c.evals.num_grid = 4          # examples shown per (set, mode) grid
  c.evals.val_source = ""       # held-out data (a DataConfig source) for the validation loss
  c.evals.val_batches = 0
  c.evals.poll_s = 30.0         # how often to look for new checkpoints
  c.evals.timeout_s = 0.0       # stop after this long without one (0 = wait for the trainer)
  # The trainer scores its own final checkpoint when done (`tip-train` prints the table):
  # the one-command CPU demo. Pods run the evaluator job beside the trainer instead.
  c.evals.after_training = False
  return c


def _tiny(c: ml_collections.ConfigDict) -> None:
  c.total_steps = 1500
  c.batch_size = 8
  # Noisy timesteps drawn more often than the paper's uniform draw (`cubic`; the squared
  # error unweighted, as the paper's): it trains the one-step prediction from pure noise,
  # this config's best mode, better in every scored column (+0.3-0.7 dB, one seed) and
  # costs the 20-step sampler up to 0.7 dB on set A (README "Set-up").
  # `--config.loss.timesteps=uniform` is the paper's loss.
  c.loss.timesteps = "cubic"
  c.model.backbone = "embedded"  # the prior shipped in tip_jax/assets (configs/prior.py)
  c.model.geometry = "mini"     # its geometry, for `--config.model.backbone=random`
  c.model.dtype = "float32"
  # The 256-token attentions (16² latents) in blocks of 128 queries: the train step in
  # 0.79x the time on a 2-core CPU (README "Set-up"); the 64-token ones keep JAX's.
  c.model.attention_query_chunk = 128
  # E' scaled to this UNet (widths 32-128 on 16² latents): with the paper's widths the
  # 4x VAE's E' (32, 96, 256 at 64²-16²) costs more than the UNet and its copy
  # together; (16, 32, 64) takes the step from 319 to 221 ms (2-core CPU) for 0.4 dB on
  # set A's best mode, none on set B's (one seed; README "Set-up").
  # `--config.model.conditioning_widths="()"` is the paper's.
  c.model.conditioning_widths = (8, 16, 32, 64)
  # Sampling starts at t = 999, where the pure noise it starts from belongs: with SD's
  # "leading" layout one DDIM step starts at t = 1 and gives noise back (9.6 dB on set
  # A); at 20 steps the two layouts score alike (README "Set-up").
  c.model.timestep_spacing = "trailing"
  # The 15 training photographs of the core dependencies and five colour ones that ship
  # with gradio (the test and demo extras): +0.4-0.9 dB in every scored column, one
  # seed (README "Set-up"). The prior and the estimator were trained on the 15 alone.
  c.data.source = "demo:train+extra"
  c.data.resolution = 64
  c.data.max_zoom = 4.0         # the training photos become many different crops
  # Half the crops with their RGB channels permuted: a ControlNet trained on a few
  # photos' colours otherwise steers held-out ones (an orange cat, a blue sky) badly
  # (one seed: +0.8 dB on set A's full prompts, +1.0 on set B's; README "Set-up").
  # The caption is kept, so a permuted crop's colour words may be wrong.
  c.data.channel_shuffle = 0.5
  c.data.num_workers = 2
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.ema_decay = 0.99
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.keep_every_steps = 0
  c.sample_every_steps = 500
  c.sample_steps = 20
  c.profile_steps = 0
  # Scored once at the end, on crops of the held-out photos: the full prompts and the
  # blind one, with 20 DDIM steps and with one (the x0 the ControlNet predicts from pure
  # noise: at this scale each further step invents texture and costs PSNR and LPIPS),
  # against the degraded input (the table `tip-train` prints). The `_wavelet` rows add
  # StableSR's colour fix (the input's low frequencies) to the one-step sampler: not the
  # paper's protocol, which has no colour correction, and scored beside it as such;
  # `_wavelet` with StableSR's 5 levels (a low band of ~64 px), `_wavelet2` with 2 (~8 px),
  # the levels that `benchmarks/sampler_options.py --split train+extra` picks for set A on
  # crops of the training photos, where 5 wins for set B (README "Set-up").
  c.evals.after_training = True
  c.evals.modes = ml_collections.ConfigDict({
      "full": ("caption", "values"), "blind": ("", "blind"),
      "full_1step": ("caption", "values", "steps=1"), "blind_1step": ("", "blind", "steps=1"),
      "full_1step_wavelet": ("caption", "values", "steps=1,color_fix=wavelet"),
      "blind_1step_wavelet": ("", "blind", "steps=1,color_fix=wavelet"),
      "full_1step_wavelet2": ("caption", "values",
                              "steps=1,color_fix=wavelet,color_fix_levels=2"),
      "blind_1step_wavelet2": ("", "blind", "steps=1,color_fix=wavelet,color_fix_levels=2")})
  c.evals.metrics = "psnr,ssim,lpips"
  c.evals.embedded_count = 48
  c.evals.steps = 20
  # No classifier-free guidance (the base's 4.0 is for SD-sized priors): on this small
  # prior w = 4 costs set A's full prompts 3.1 dB and set B's 2.3 (README "Set-up").
  c.evals.guidance = 1.0
  c.evals.poll_s = 2.0


def _sd21(c: ml_collections.ConfigDict) -> None:
  c.model.geometry = "sd21"


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  parts = [p.strip() for p in (arg or "tiny").split(",") if p.strip()]
  unknown = [p for p in parts if p not in BASES + ABLATIONS]
  if unknown:
    raise ConfigError(f"unknown config part(s) {unknown}; bases {BASES}, ablations {ABLATIONS}")
  bases = [p for p in parts if p in BASES]
  if len(bases) > 1:
    raise ConfigError(f"pick one base of {BASES}, got {bases}")
  c = _base()
  base = bases[0] if bases else "tiny"
  {"tiny": _tiny, "sd15": lambda _: None, "sd21": _sd21}[base](c)
  if "controlnet_sr" in parts:
    c.model.fusion = "additive"
    c.prompts.semantic = False
    c.prompts.restoration = False
    c.evals.modes = ml_collections.ConfigDict({"none": ("", "")})  # it reads no prompt
  if "no_params" in parts:
    c.degrade.with_values_prob = 0.0
    # Scored with the prompts it was trained on: degradation names without strengths.
    c.evals.modes.full = ("caption", "type_only")
    c.evals.modes.restoration = ("", "type_only")
  if "modulate_up" in parts:
    c.model.fusion = "modulate_skip_and_up"
  c.name = "_".join([base] + [p for p in parts if p in ABLATIONS])
  return c


def sweep():
  """The full model beside the paper's ablations (Tab. 5/6), on the launched base: each
  point adds one ablation to the config's argument (see `experiment.config.load_sweep`)."""
  yield {}
  for ablation in ABLATIONS:
    yield {"config": ablation}


def sweep_seeds():
  """The launched config with three seeds: the run-to-run spread behind a table's digits."""
  for seed in range(3):
    yield {"seed": seed}

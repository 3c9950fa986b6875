"""How much a trained TIP's ControlNet steers the frozen UNet, timestep by timestep.

    python benchmarks/control_use.py --workdir /tmp/tip_tiny
    python benchmarks/control_use.py --workdir /tmp/tip_tiny \
        --set /tmp/tip_tiny/eval/sets/embedded_realesrgan_64 --count 48

On a benchmark set (default: the embedded held-out set A at the run's resolution, as
the trainer scores it), the clean crops' VAE latents are noised at fixed timesteps (one noise
draw per t, the same for every row) and the MSE of the predicted ε (a v-prediction
backbone's output converted) is measured

  unet          the frozen UNet alone (the ControlNet's outputs zeroed: the prior)
  trivial       ε̂ = z_t / sqrt(1 - ᾱ_t), i.e. x̂0 = 0: what a model that reads nothing
                from z_t's signal scores; a prior above it at some t misleads a sampler there
  tip           the ControlNet with the set's degraded input and prompts
  shuffled      the same with another example's degraded input (control that is not
                this image's); tip < shuffled says the ControlNet reads the image
  clean_hint    the same with the clean image as input: how far more information in the
                hint would take it

with `x0_weight` = ᾱ_t / (1 - ᾱ_t), the weight the ε-loss puts on an x0 error at t. Then
the decoded PSNR of DDIM (`--sample_steps`) from pure noise at T, and for each of
`--starts` (the steps above t_start skipped) from pure noise, from the degraded input's
latent and from the clean latent noised to t_start, the last also with the prior alone
(`prior_from_clean`: the floor any ControlNet that leaves the last steps to the prior
inherits), against the VAE's own
reconstruction of the clean crops (the ceiling of any latent model), of the input (what
copying the input's latent gives), of the clean latents plus Gaussian noise of mean
square `LATENT_NOISE` (`vae_latent_noise`: how much a latent error of that size costs
through this decoder) and the input itself.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from tip_jax.diffusion.schedules import add_noise, predicted_noise
from tip_jax.eval import sets
from tip_jax.eval.sets import EvalSet
from tip_jax.experiment.runs import load_for_inference
from tip_jax.metrics import pixel
from tip_jax.models import tip
from tip_jax.models.tokenizer import tokenize


def _psnr(a: jax.Array, b: jax.Array) -> float:
  """Mean PSNR of images in [-1, 1], as the evaluator averages it: an input identical to
  its ground truth (a draw that applied no stage) is left out of the mean."""
  values = np.asarray(pixel.psnr((jnp.clip(a, -1, 1) + 1) / 2, (b + 1) / 2))
  return float(np.mean(values[np.isfinite(values)]))


# The mean square of the noise added to the clean latents for `vae_latent_noise`: about
# what a small prior leaves at t = 50 (README, "Pretraining a backbone").
LATENT_NOISE = 0.03


def measure(workdir: str, set_path: str = "", count: int = 48,
            timesteps: tuple[int, ...] = (50, 200, 400, 600, 800, 900, 950, 999),
            sample_steps: int = 20, starts: tuple[int, ...] = (999, 900, 800, 600),
            seed: int = 0, backbone: str | None = None) -> dict:
  """The module docstring's figures for a TIP run on a benchmark set (default: the
  embedded held-out set A at the run's resolution, built in a temporary folder);
  `backbone` replaces the folder the run's config names."""
  run = load_for_inference(workdir, backbone=backbone)
  if not set_path:
    with tempfile.TemporaryDirectory() as folder:
      built = sets.ensure_embedded(folder, size=run.resolution, count=count, seed=seed)
      param = next(s for s in built if s.name.startswith("embedded_param"))
      return _measure(run, param, count, timesteps, sample_steps, starts, seed)
  return _measure(run, EvalSet.open(set_path), count, timesteps, sample_steps, starts, seed)


def _measure(run, eval_set: EvalSet, count: int, timesteps: tuple[int, ...],
             sample_steps: int, starts: tuple[int, ...], seed: int) -> dict:
  bb, controlnet = run.backbone, run.controlnet
  if bb.prediction_type not in ("epsilon", "v_prediction"):
    raise ValueError(f"a {bb.prediction_type}-prediction backbone; this benchmark reads "
                     "ε- and v-prediction ones")
  batch = next(eval_set.batches(count))
  gt = jnp.asarray(batch.gt, jnp.float32) / 127.5 - 1
  y = jnp.asarray(batch.inputs, jnp.float32) / 127.5 - 1
  te = bb.text_encoder

  def encode_text(texts: list[str]) -> jax.Array:
    return te.module.apply({"params": te.params}, jnp.asarray(tokenize(bb.tokenizer, texts)))

  e_s, e_r = encode_text(batch.captions), encode_text(batch.restoration)
  vae, vae_params = bb.vae.module, bb.vae.params

  def latent(images: jax.Array) -> jax.Array:
    return vae.config.scale(vae.apply({"params": vae_params}, images, method="encode")[0])

  def image(z: jax.Array) -> jax.Array:
    return vae.apply({"params": vae_params}, vae.config.unscale(z), method="decode")

  z0, schedule = latent(gt), bb.schedule()
  z_input = latent(y)
  fusion, unet, unet_params = controlnet.config.fusion, bb.unet.module, bb.unet.params

  @jax.jit
  def eps(zt: jax.Array, t: jax.Array, hint: jax.Array, on: float) -> jax.Array:
    tt = jnp.full((zt.shape[0],), t)
    control = controlnet.apply({"params": run.controlnet_params}, zt, tt, e_r, hint)
    control = jax.tree.map(lambda c: c * on, control)
    out = tip.denoise(unet, unet_params, zt, tt, e_s, control, fusion)
    return predicted_noise(schedule, out, zt, tt, bb.prediction_type)

  shuffled = jnp.roll(y, 1, axis=0)
  table = {}
  for t in timesteps:
    noise = jax.random.normal(jax.random.key(seed * 1000 + t), z0.shape)
    zt = add_noise(schedule, z0, noise, jnp.full((z0.shape[0],), t))
    a = float(schedule.alphas_cumprod[t])
    mse = lambda pred: round(float(jnp.mean(jnp.square(pred - noise))), 5)  # noqa: E731
    table[t] = {"x0_weight": round(a / (1 - a), 5), "unet": mse(eps(zt, t, y, 0.0)),
                "trivial": mse(zt / np.sqrt(1 - a)),
                "copy_input": mse((zt - np.sqrt(a) * z_input) / np.sqrt(1 - a)),
                "tip": mse(eps(zt, t, y, 1.0)),
                "shuffled": mse(eps(zt, t, shuffled, 1.0)),
                "clean_hint": mse(eps(zt, t, gt, 1.0))}

  def ddim(start_t: int, source: jax.Array | None, on: float = 1.0) -> float:
    """Decoded PSNR of DDIM from pure noise at start_t (`source` None) or from `source`
    latents noised to start_t; `on` scales the ControlNet's outputs (0: the prior)."""
    ts = np.linspace(start_t, 0, sample_steps).round().astype(int)
    z = jax.random.normal(jax.random.key(seed), z0.shape)
    if source is not None:
      z = add_noise(schedule, source, z, jnp.full((z.shape[0],), ts[0]))
    ac = schedule.alphas_cumprod
    for i, t in enumerate(ts):
      e = eps(z, int(t), y, on)
      x0 = (z - jnp.sqrt(1 - ac[t]) * e) / jnp.sqrt(ac[t])
      z = x0 if i + 1 == len(ts) else jnp.sqrt(ac[ts[i + 1]]) * x0 + jnp.sqrt(1 - ac[ts[i + 1]]) * e
    return round(_psnr(image(z), gt), 2)

  started = time.time()
  latent_noise = jax.random.normal(jax.random.key(seed + 1), z0.shape)
  sampling = {"input": round(_psnr(y, gt), 2), "vae_reconstruction": round(_psnr(image(z0), gt), 2),
              "vae_of_input": round(_psnr(image(z_input), gt), 2),
              "vae_latent_noise": round(_psnr(image(z0 + np.sqrt(LATENT_NOISE) * latent_noise),
                                              gt), 2),
              "ddim_from_noise": ddim(schedule.num_train_timesteps - 1, None)}
  for start in starts:
    sampling[f"ddim_from_noise_t{start}"] = ddim(start, None)
    sampling[f"ddim_from_input_t{start}"] = ddim(start, z_input)
    sampling[f"ddim_from_clean_t{start}"] = ddim(start, z0)
    sampling[f"prior_from_clean_t{start}"] = ddim(start, z0, 0.0)
  return {"step": run.step, "set": eval_set.name, "images": int(gt.shape[0]),
          "eps_mse": table, "psnr": sampling, "sampling_s": round(time.time() - started, 1)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a TIP run (its latest checkpoint, "
                      "or a step folder)")
  parser.add_argument("--set", default="", help="benchmark set folder (default: the "
                      "embedded held-out set A at the run's resolution, built on the fly)")
  parser.add_argument("--count", type=int, default=48)
  parser.add_argument("--timesteps", default="50,200,400,600,800,900,950,999")
  parser.add_argument("--sample_steps", type=int, default=20)
  parser.add_argument("--starts", default="999,900,800,600", help="DDIM start timesteps")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--backbone", default=None, help="a backbone folder in place of the "
                      "one the run's config names (e.g. an earlier version of the prior)")
  args = parser.parse_args()
  from forward import machine  # benchmarks/ is on the path when this runs as a script
  ints = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
  result = measure(args.workdir, args.set, args.count, ints(args.timesteps),
                   args.sample_steps, ints(args.starts), args.seed, args.backbone)
  print(json.dumps({"workdir": args.workdir, **result, "config": vars(args),
                    "machine": machine()}))


if __name__ == "__main__":
  main()

"""The backbone's own losses, so the trainer can pretrain it (`config.task` vae | unet).

vae   Stable Diffusion's autoencoder objective (LDM's `LPIPSWithDiscriminator` with its
      discriminator left out, and its learned output log-variance fixed at 0): an L1 and
      an LPIPS reconstruction loss of a decoded *posterior sample*, plus a small KL
      weight that keeps the latents near a unit Gaussian without blurring them. LDM sums
      the reconstruction over pixels (the perceptual distance counted once per pixel)
      and adds kl_weight x the KL summed over latent elements; here everything is
      divided by the pixel-element count, the same objective at a scale AdamW ignores,
      so `kl_weight` keeps LDM's meaning (1e-6) and the logged L1 reads as a mean.
unet  text-to-image denoising on the frozen VAE's latents: TIP's ε- (or v-) MSE without
      the ControlNet (`loss.noised_latents`), conditioned on the frozen text encoder's
      states of the caption, which the data pipeline already drops to "" with
      probability `data.semantic_dropout` (what classifier-free guidance needs).

Both draw every random number from the example's (seed, step, record index) key, as
TIP's loss does, so resuming and resharding keep the same trajectory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tip_jax.diffusion.schedules import Schedule
from tip_jax.experiment.loss import Batch, example_keys, noised_latents
from tip_jax.metrics.lpips import LPIPSNet, lpips_distance
from tip_jax.models.backbone import Backbone
from tip_jax.models.vae import AutoencoderKL

# The pipeline batch keys both losses read (no degradation, no restoration prompt).
DEVICE_KEYS = ("image", "semantic_ids", "index")


def device_batch(batch: Batch, step: jax.Array, *, seed: int) -> Batch:
  """A pipeline batch (`DEVICE_KEYS`) → clean images in [-1, 1], caption ids, keys."""
  clean = batch["image"].astype(jnp.float32) / 255.0
  return {"clean": clean * 2 - 1, "semantic_ids": batch["semantic_ids"],
          "keys": example_keys(seed, step, batch["index"])}


def vae_loss(params: dict, frozen: dict, batch: Batch, *, vae: AutoencoderKL,
             lpips: LPIPSNet | None, lpips_weight: float, kl_weight: float
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, its parts {l1, kl, lpips}) of the VAE `params` on `batch` (see the module
  docstring); with `lpips` None (weight 0) there is no LPIPS term, else frozen["lpips"]
  holds its weights."""
  clean = batch["clean"]
  dtype = vae.options.dtype
  mean, logvar = vae.apply({"params": params}, clean.astype(dtype), method="encode")
  mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
  eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], jnp.float32))(batch["keys"])
  z = mean + jnp.exp(0.5 * logvar) * eps
  recon = vae.apply({"params": params}, z.astype(dtype), method="decode").astype(jnp.float32)
  l1 = jnp.mean(jnp.abs(recon - clean))
  # KL(N(mean, var) || N(0, 1)) summed over each example's latent elements.
  kl = 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3))
  loss = l1 + kl_weight * jnp.mean(kl) / clean[0].size
  parts = {"l1": l1, "kl": jnp.mean(kl)}
  if lpips is not None:
    parts["lpips"] = jnp.mean(lpips_distance(frozen["lpips"], (recon + 1) / 2,
                                             (clean + 1) / 2, module=lpips))
    loss = loss + lpips_weight * parts["lpips"]
  return loss, parts


def unet_loss(params: dict, frozen: dict, batch: Batch, *, backbone: Backbone,
              schedule: Schedule) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(MSE against ε or v, {}) of the UNet `params`; frozen: the backbone's "vae" and
  "text_encoder" params."""
  z_t, t, target = noised_latents(backbone, frozen["vae"], batch["clean"], batch["keys"],
                                  schedule)
  text = backbone.text_encoder.module.apply({"params": frozen["text_encoder"]},
                                            batch["semantic_ids"])
  unet = backbone.unet.module
  dtype = unet.options.dtype
  pred = unet.apply({"params": params}, z_t.astype(dtype), t, text.astype(dtype))
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target)), {}

"""TIP's denoiser: frozen UNet (semantic prompt) + ControlNet (degraded image, restoration
prompt) joined by the fusion layer. Training and sampling both call `predict`."""

from __future__ import annotations

import jax

from tip_jax.models.controlnet import ControlNetModel
from tip_jax.models.unet import FusionHook, UNet2DConditionModel

Array = jax.Array


def fusion_hook(control: tuple[tuple[Array, ...], Array], fusion: str,
                scale: float | Array = 1.0) -> FusionHook:
  """The UNet hook for a ControlNet's outputs; `scale` is the control strength.

  additive: f + s·r.  modulate: (1 + s·gamma)·f + s·beta, gamma || beta being the
  first 2C channels of a site's output; "up" sites read the last 2C' channels.
  """
  down, mid = control

  def modulate(f: Array, m: Array) -> Array:
    c = f.shape[-1]
    gamma, beta = m[..., :c], m[..., c:2 * c]
    return ((1 + scale * gamma) * f + scale * beta).astype(f.dtype)

  def hook(site: str, index: int, f: Array) -> Array:
    m = mid if site == "mid" else down[index]
    if site == "up":
      if fusion != "modulate_skip_and_up":
        return f
      return modulate(f, m[..., -2 * f.shape[-1]:])
    if fusion == "additive":
      return (f + scale * m).astype(f.dtype)
    return modulate(f, m)

  return hook


def predict(unet: UNet2DConditionModel, controlnet: ControlNetModel, unet_params: dict,
            controlnet_params: dict, z_t: Array, timesteps: Array, semantic_emb: Array,
            restoration_emb: Array, degraded: Array, control_scale: float | Array = 1.0
            ) -> Array:
  """ε̂ (or v̂, as the backbone was trained) for noisy latents z_t.

  semantic_emb / restoration_emb: CLIP hidden states of c_s and c_r.
  degraded: y as NHWC in [-1, 1] at 8x the latent resolution.
  """
  control = controlnet.apply({"params": controlnet_params}, z_t, timesteps, restoration_emb,
                             degraded)
  return denoise(unet, unet_params, z_t, timesteps, semantic_emb, control,
                 controlnet.config.fusion, control_scale)


def denoise(unet: UNet2DConditionModel, unet_params: dict, z_t: Array, timesteps: Array,
            semantic_emb: Array, control: tuple[tuple[Array, ...], Array], fusion: str,
            control_scale: float | Array = 1.0) -> Array:
  """`predict`'s UNet half, given the ControlNet's outputs for each row of z_t: a sampler
  whose rows share the ControlNet's inputs runs the ControlNet once for them."""
  hook = fusion_hook(control, fusion, control_scale)
  return unet.apply({"params": unet_params}, z_t, timesteps, semantic_emb, fusion=hook)

"""Restoring images with a trained TIP: `TIPRestorer`, the image handling around the
programs of `tip_jax.sampling`.

    restorer = TIPRestorer.from_checkpoint("workdir")
    out = restorer.restore(image, "a zebra", "Deblur with sigma 3.0;", steps=50, seed=0)
    outs = restorer.restore_batch(images, ["a zebra"] * 4, ["Deblur with sigma 3.0;"] * 4)
    out = restorer.restore(image, restoration_prompt="auto")   # estimated from the image

Prompts become CLIP states, images are padded (reflected) to the UNet's grid and cropped
back, "Upsample to" prompts resize their input as training did, and images above the
model's resolution are tiled (the `Layout`). Same inputs and seed, same image.

The restoration prompt "auto" is written from the image by the degradation estimator
(`tip_jax.estimate`; the one installed with tip_jax unless `estimator` is set).
"""

from __future__ import annotations

import copy
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from tip_jax.degrade import BLIND_PROMPT, DegradeConfig, prompts, resizing
from tip_jax.diffusion import colorfix, samplers, tiling
from tip_jax.diffusion.schedules import add_noise
from tip_jax.estimate import Estimate, Estimator
from tip_jax.estimate import load as load_estimator
from tip_jax.experiment.sharding import leading_shards
from tip_jax.image_io import as_rgb
from tip_jax.models.backbone import Backbone
from tip_jax.models.controlnet import ControlNetModel
from tip_jax.models.tokenizer import tokenize
from tip_jax.sampling import Layout, decode, encode, encode_text, sample_latents

Array = jax.Array
DEFAULT_GUIDANCE = 4.0
# c_r of the training pairs that no stage degraded ("nothing to undo"): restoration
# guidance extrapolates from its prediction towards the given prompt's.
NULL_RESTORATION = ""
AUTO = "auto"   # the restoration prompt that asks for an estimated one


def is_auto(text: str) -> bool:
  return text.strip().lower() == AUTO


class TIPRestorer:
  """Frozen backbone + trained ControlNet/fusion params, and the image handling around
  the programs of `tip_jax.sampling` (prompts, padding, resizing, colour fix)."""

  def __init__(self, backbone: Backbone, controlnet: ControlNetModel, controlnet_params: dict,
               *, resolution: int, degrade_config: DegradeConfig | None = None,
               tile_batch: int | None = None, uses_semantic: bool = True,
               uses_restoration: bool = True):
    """resolution: the training side in pixels: the default tile, and the size above
    which tiling starts. tile_batch: tiles denoised together (vmapped) per device.
    uses_semantic / uses_restoration: whether the model was trained with that prompt
    kind (a run's `config.prompts`); one trained without it is given "" whatever the
    caller passes (the ControlNet-SR ablation saw no prompt at all), with one warning."""
    self.backbone = backbone
    self.uses_semantic, self.uses_restoration = uses_semantic, uses_restoration
    self._restoration: dict[str, tuple[str, float | None]] = {}  # typed -> conditioning
    self._dropped_semantic: set[str] = set()                       # warned about once
    self.controlnet, self.controlnet_params = controlnet, controlnet_params
    self._estimator: Estimator | None = None                      # loaded on first "auto"
    self.resolution = resolution
    self.degrade_config = degrade_config or DegradeConfig(size=(resolution, resolution))
    self.tile_batch = tile_batch
    self.schedule = backbone.schedule()
    self.factor = backbone.vae.module.config.downsample_factor   # pixels per latent
    self.multiple = self.factor * 2 ** (len(backbone.unet.module.config.block_out_channels) - 1)
    if resolution % self.multiple:
      raise ValueError(f"resolution {resolution} is not a multiple of {self.multiple}")

  @classmethod
  def from_checkpoint(cls, path: str, step: int | None = None, use_ema: bool = True,
                      backbone: str | None = None, **kwargs) -> TIPRestorer:
    """A trained TIP checkpoint (EMA params only are read) and the backbone it names, or
    `backbone`: the same diffusers folder at another path (a checkpoint moved to another
    machine, e.g. a Colab runtime)."""
    from tip_jax.experiment.runs import load_for_inference  # pulls in orbax/grain
    loaded = load_for_inference(path, step=step, use_ema=use_ema, backbone=backbone)
    use = loaded.config.prompts
    return cls(loaded.backbone, loaded.controlnet, loaded.controlnet_params,
               resolution=loaded.resolution, degrade_config=loaded.degrade_config,
               uses_semantic=bool(use.semantic), uses_restoration=bool(use.restoration),
               **kwargs)

  def with_params(self, controlnet_params: dict) -> TIPRestorer:
    """The same restorer with other ControlNet params (another checkpoint or EMA state);
    it shares every compiled program."""
    other = copy.copy(self)
    other.controlnet_params = controlnet_params
    return other

  @property
  def estimator(self) -> Estimator:
    """The degradation estimator "auto" prompts come from: the installed one unless set;
    loading a missing one raises `CheckpointError` naming the file."""
    if self._estimator is None:
      self.estimator = load_estimator()
    return self._estimator

  @estimator.setter
  def estimator(self, estimator: Estimator) -> None:
    ranges = self.degrade_config.tip.ranges
    if estimator.spec.ranges != ranges:
      logging.warning("the degradation estimator %s writes strengths in %s; this model was "
                      "trained on %s", estimator.source, estimator.spec.ranges, ranges)
    self._estimator = estimator

  def prompt_for(self, estimate: Estimate) -> str:
    """An estimate's restoration prompt as this model reads prompts: with strengths, or
    naming the stages only for a model trained without them (`no_params`)."""
    return estimate.prompt(with_values=self.degrade_config.tip.with_values_prob > 0)

  def auto_prompt(self, image: np.ndarray) -> str:
    """The restoration prompt the estimator writes for uint8 `image` (from its pixels;
    `Estimator.estimate_file` also reads a JPEG file's quality)."""
    text = self.prompt_for(self.estimator.estimate(image))
    logging.info("estimated restoration prompt: %r", text)
    return text

  def restoration_conditioning(self, restoration_prompt: str) -> tuple[str, float | None]:
    """(the text the model is given, the "Upsample to Fx" factor or None) for a typed
    restoration prompt: its training form (`prompts.canonical`; a strength beyond the
    training range is kept, with one warning), or "" for a model trained without
    restoration prompts. Raises `PromptError` naming a clause that does not parse or
    asks for something physically meaningless."""
    if restoration_prompt not in self._restoration:
      tip_cfg = self.degrade_config.tip
      text, stages = prompts.canonical(restoration_prompt, tip_cfg.ranges, tip_cfg.defaults)
      if not self.uses_restoration:
        if text and not prompts.is_blind(text):
          logging.warning("this model was trained without restoration prompts: %r is not "
                          "given to it (an Upsample factor still resizes the input)", text)
        text = ""
      self._restoration[restoration_prompt] = (text, stages and stages.downsample)
    return self._restoration[restoration_prompt]

  def upsample_factor(self, restoration_prompt: str) -> float | None:
    """The prompt's "Upsample to Fx" factor, None if it names none (see
    `restoration_conditioning`)."""
    return self.restoration_conditioning(restoration_prompt)[1]

  def semantic_conditioning(self, semantic_prompt: str) -> str:
    """The semantic prompt the model is given: as typed, or "" for a model trained
    without semantic prompts (one warning when that drops a caption)."""
    if self.uses_semantic or not semantic_prompt:
      return semantic_prompt
    if semantic_prompt not in self._dropped_semantic:
      logging.warning("this model was trained without semantic prompts: %r is not given "
                      "to it", semantic_prompt)
      self._dropped_semantic.add(semantic_prompt)
    return ""

  def restore(self, image: np.ndarray, semantic_prompt: str = "",
              restoration_prompt: str = BLIND_PROMPT, steps: int = 50,
              guidance: float = DEFAULT_GUIDANCE, seed: int = 0, **options) -> np.ndarray:
    """uint8 (H, W, 3) (or grey / RGBA) -> restored uint8 (H', W', 3); `options` are
    `restore_batch`'s."""
    return self.restore_batch([image], [semantic_prompt], [restoration_prompt], steps=steps,
                              guidance=guidance, seed=[seed], **options)[0]

  def restore_batch(self, images: Sequence[np.ndarray],
                    semantic_prompts: str | Sequence[str] = "",
                    restoration_prompts: str | Sequence[str] = BLIND_PROMPT, steps: int = 50,
                    guidance: float = DEFAULT_GUIDANCE, seed: int | Sequence[int] = 0, *,
                    sampler: str = "ddim", restoration_guidance: float = 1.0,
                    control_scale: float = 1.0, strength: float = 1.0,
                    tile: int | None = None, tile_overlap: int | None = None,
                    color_fix: str | None = None,
                    color_fix_levels: int = colorfix.LEVELS, samples: int = 1,
                    upsample: bool = True, devices: int | None = None,
                    batch_sharding: jax.sharding.NamedSharding | None = None) -> np.ndarray:
    """Same-size uint8 images (after any "Upsample to" resize), each with its own prompts
    (a str applies to all) → uint8 (B, H', W', 3), in one sampling program. A
    restoration prompt "auto" is estimated from its image (`auto_prompt`); the estimate
    describes the image as given, so its "Upsample to" factor never resizes it.

    seed: one per image (an int s gives s, s+1, ...); image i's noise is drawn from
      its own seed alone, so it restores as it would on its own (`restore`).
    guidance: w of classifier-free guidance on the semantic prompt (skipped when every
      prompt is empty: both branches would be equal). restoration_guidance: w_r > 1
      extrapolates from the "" restoration prompt towards the given one (off at 1).
    control_scale: strength of the ControlNet's modulation (1 = as trained).
    strength: < 1 starts from the input's latent noised to that fraction of the steps.
    tile: tile side in pixels (default: the model's resolution; 0 = never tile);
      tile_overlap: in pixels (default tile / 4).
    color_fix: None, "adain" or "wavelet" (towards the input's low frequencies).
    color_fix_levels: the wavelet split's levels (StableSR's 5 by default; fewer keep
      more of the input: a finer low band).
    samples: restorations drawn per image (draw k > 0 from `fold_in(key(seed), k)`) and
      averaged as decoded images: an estimate of the posterior mean, the restoration
      that PSNR rewards (one draw is a sample, which LPIPS prefers); not the paper's.
    upsample: with an "Upsample to Fx" prompt, take the input as the small image and
      resize it by F (bicubic) as training did, before restoring.
    devices: spread the tiles over this many devices.
    batch_sharding: split the images over a mesh's batch axes (the evaluator's), when
      their count divides over it; params are used as placed (replicated, or sharded
      like the trainer's frozen backbone).
    """
    n = len(images)
    if samples < 1:
      raise ValueError(f"samples must be at least 1, got {samples}")
    semantic = [self.semantic_conditioning(t)
                for t in _per_image(semantic_prompts, n, "semantic_prompts")]
    typed = _per_image(restoration_prompts, n, "restoration_prompts")
    auto = [is_auto(t) for t in typed]
    conditioning = [self.restoration_conditioning(self.auto_prompt(image) if a else t)
                    for image, t, a in zip(images, typed, auto)]
    restoration = [text for text, _ in conditioning]
    seeds = list(range(seed, seed + n)) if isinstance(seed, int) else list(seed)
    if len(seeds) != n:
      raise ValueError(f"{len(seeds)} seeds for {n} images")
    degraded = []
    for image, (_, factor), a in zip(images, conditioning, auto):
      rgb = _as_rgb(image)
      degraded.append(rgb if factor is None or not upsample or a else _resize(rgb, factor))
    if len({d.shape for d in degraded}) > 1:
      raise ValueError("restore_batch needs images of one size (after any upsampling), got "
                       f"{sorted({d.shape[1:3] for d in degraded})}")
    degraded = np.concatenate(degraded)
    height, width = degraded.shape[1:3]
    padded = _pad_to(degraded, self.multiple)
    layout = self._layout(padded.shape[1:3], tile, tile_overlap, devices,
                          cfg=guidance != 1.0 and any(semantic),
                          restoration_cfg=restoration_guidance != 1.0)
    plan = samplers.make_plan(self.schedule, steps, sampler, strength)
    sem_states, res_states = self._embeddings(layout, semantic, restoration)
    vae = self.backbone.vae
    channels = self.backbone.unet.module.config.in_channels
    if strength < 1.0:
      z0 = encode(vae.params, padded, vae=vae.module, layout=layout)
    if batch_sharding is not None and n % leading_shards(batch_sharding) == 0:
      padded, sem_states, res_states = jax.device_put(
          (jnp.asarray(padded), sem_states, res_states), batch_sharding)
    else:
      batch_sharding = None
    scales = jnp.asarray([guidance, restoration_guidance, control_scale], jnp.float32)
    logging.info("restoring %d image(s) of %dx%d: %d step(s) of %s, %s, %d draw(s) each", n,
                 width, height, plan.steps, sampler,
                 f"{len(layout.tiles)} tiles" if layout.tiles else "untiled", samples)
    params = self._params()
    tile_mesh = tiling.tile_mesh(layout.devices)
    if tile_mesh is not None:  # params from a checkpoint sit on one device: replicate all
      replicated = jax.sharding.NamedSharding(tile_mesh, jax.sharding.PartitionSpec())
      params, padded, sem_states, res_states = jax.device_put(
          (params, jnp.asarray(padded), sem_states, res_states), replicated)
    keys = [jax.random.key(s) for s in seeds]
    first_t = jnp.repeat(plan.timesteps[:1], n)
    total = 0.0
    for draw in range(samples):
      start = jnp.concatenate([
          jax.random.normal(jax.random.fold_in(k, draw) if draw else k,
                            (1, *layout.latent, channels)) for k in keys])
      if strength < 1.0:
        start = add_noise(self.schedule, z0, start, first_t)
      if batch_sharding is not None:
        start = jax.device_put(start, batch_sharding)
      elif tile_mesh is not None:
        start = jax.device_put(start, replicated)
      latent = sample_latents(params, start, padded, sem_states, res_states, plan, scales,
                              unet=self.backbone.unet.module, controlnet=self.controlnet,
                              layout=layout)
      total = total + decode(vae.params, latent, vae=vae.module, layout=layout)
    out = (total / samples)[:, :height, :width]
    if color_fix is not None:
      out = _color_fix(out, jnp.asarray(degraded) * 2 - 1, color_fix, color_fix_levels)
    return np.asarray(jnp.round(jnp.clip(out + 1, 0, 2) * 127.5)).astype(np.uint8)

  def memory_bytes(self, height: int, width: int, *, tile: int | None = None,
                   tile_overlap: int | None = None, cfg: bool = True) -> dict[str, int]:
    """Peak bytes (arguments + outputs + temporaries, from XLA's memory analysis of the
    compiled programs; nothing is run) of sampling and of decoding one image this size."""
    shape = (1, -(-height // self.multiple) * self.multiple,
             -(-width // self.multiple) * self.multiple, 3)
    layout = self._layout(shape[1:3], tile, tile_overlap, None, cfg=cfg, restoration_cfg=False)
    abstract = lambda x: jax.tree.map(  # noqa: E731
        lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), x)
    text = self.backbone.text_encoder
    emb = jax.eval_shape(functools.partial(encode_text, text_encoder=text.module), text.params,
                         jnp.zeros((layout.rows, 77), jnp.int32))
    emb = jax.ShapeDtypeStruct((1,) + emb.shape, emb.dtype)
    latent = jax.ShapeDtypeStruct(
        (1, *layout.latent, self.backbone.unet.module.config.in_channels), jnp.float32)
    plan = samplers.make_plan(self.schedule, 2)
    vae = self.backbone.vae
    programs = {
        "sample": sample_latents.lower(
            abstract(self._params()), latent, jax.ShapeDtypeStruct(shape, jnp.float32), emb,
            emb, abstract(plan), jax.ShapeDtypeStruct((3,), jnp.float32),
            unet=self.backbone.unet.module, controlnet=self.controlnet, layout=layout),
        "decode": decode.lower(abstract(vae.params), latent, vae=vae.module, layout=layout)}
    out = {}
    for name, lowered in programs.items():
      stats = lowered.compile().memory_analysis()
      out[name] = int(stats.argument_size_in_bytes + stats.output_size_in_bytes
                      + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    return out

  def _params(self) -> dict:
    return {"unet": self.backbone.unet.params, "controlnet": self.controlnet_params}

  def _layout(self, padded: tuple[int, int], tile: int | None, overlap: int | None,
              devices: int | None, *, cfg: bool, restoration_cfg: bool) -> Layout:
    tile = self.resolution if tile is None else tile
    tiles = None
    if tile and (padded[0] > tile or padded[1] > tile):
      tile -= tile % self.multiple
      if tile < self.multiple:
        raise ValueError(f"tile must be at least {self.multiple} pixels")
      overlap = tile // 4 if overlap is None else overlap
      f = self.factor
      tiles = tiling.Tiles.cover((padded[0] // f, padded[1] // f), tile // f, overlap // f)
    return Layout((padded[0] // self.factor, padded[1] // self.factor), tiles, cfg,
                  restoration_cfg, devices if tiles else None,
                  self.tile_batch if tiles else None, self.factor)

  def _embeddings(self, layout: Layout, semantic: list[str], restoration: list[str]
                  ) -> tuple[Array, Array]:
    """(B, rows, L, D) CLIP states of each image's guidance rows (see `Layout.rows`)."""
    texts = []
    for sem, res in zip(semantic, restoration):
      rows = [(sem, res)]
      if layout.cfg:
        rows.append(("", res))
      if layout.restoration_cfg:
        rows.append((sem, NULL_RESTORATION))
      texts += [t for row in rows for t in row]
    text = self.backbone.text_encoder
    states = encode_text(text.params, tokenize(self.backbone.tokenizer, texts),
                         text_encoder=text.module)
    states = states.reshape((len(semantic), layout.rows, 2) + states.shape[1:])
    return states[:, :, 0], states[:, :, 1]


def _per_image(texts: str | Sequence[str], n: int, what: str) -> list[str]:
  if isinstance(texts, str):
    return [texts] * n
  texts = [str(t) for t in texts]
  if len(texts) != n:
    raise ValueError(f"{len(texts)} {what} for {n} images")
  return texts


_color_fix = jax.jit(colorfix.color_fix, static_argnums=(2, 3))
_resize_canvas = jax.jit(resizing.resize, static_argnums=(1, 2, 3, 4))


def _as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 (H, W), (H, W, 1|3|4) -> float32 (1, H, W, 3) in [0, 1]."""
  return as_rgb(image)[None].astype(np.float32) / 255.0


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
  """Bicubic by `factor`, the kernel the training pipeline brings images back up with."""
  h, w = image.shape[1:3]
  size = (int(round(h * factor)), int(round(w * factor)))
  out = _resize_canvas(image[0], (h, w), size, resizing.BICUBIC, size)
  return np.clip(np.asarray(out), 0.0, 1.0)[None]


def _pad_to(image: np.ndarray, multiple: int) -> np.ndarray:
  """Reflect-pad (bottom, right) to a multiple of `multiple`; [0, 1] -> [-1, 1]."""
  h, w = image.shape[1:3]
  pad = ((0, 0), (0, -h % multiple), (0, -w % multiple), (0, 0))
  return np.pad(image * 2 - 1, pad, mode="reflect").astype(np.float32)

"""`TIPRestorer`: a trained TIP model restoring images of any size.

    restorer = TIPRestorer.from_checkpoint("workdir")
    out = restorer.restore(image, "a zebra", "Deblur with sigma 3.0;", steps=50, seed=0)

One restore = text encoding, one jitted sampling program (every step inside a
`lax.scan`, classifier-free guidance inside the step) and one jitted VAE decode.
Images are padded (reflected) to the UNet's grid and cropped back. Above the model's
resolution the latent is tiled: at every step each overlapping tile is denoised on its
own and the outputs are blended into one latent (`tip_jax.diffusion.tiling`), and the
VAE decodes (and encodes) tile by tile, so activation memory is set by the tile, not the
image. Tiles can be spread over devices. Same inputs and seed, same image.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from tip_jax.convert.diffusers import Backbone
from tip_jax.degrade import BLIND_PROMPT, DegradeConfig, prompts, resizing
from tip_jax.diffusion import colorfix, samplers, tiling
from tip_jax.diffusion.schedules import Schedule, add_noise
from tip_jax.models import tip
from tip_jax.models.controlnet import ControlNetModel
from tip_jax.models.tokenizer import tokenize

Array = jax.Array
DEFAULT_GUIDANCE = 4.0
# c_r of the training pairs that no stage degraded ("nothing to undo"): restoration
# guidance extrapolates from its prediction towards the given prompt's.
NULL_RESTORATION = ""


@dataclasses.dataclass(frozen=True)
class _Call:
  """The static shape of one restore: what a compiled program depends on."""

  latent: tuple[int, int]
  tiles: tiling.Tiles | None      # latent tiles; None = the whole latent at once
  cfg: bool                       # an unconditional-semantic row for guidance
  restoration_cfg: bool           # a null-restoration row for restoration guidance
  devices: int | None


class TIPRestorer:
  """Frozen backbone + trained ControlNet/fusion, ready to restore."""

  def __init__(self, backbone: Backbone, controlnet: ControlNetModel, controlnet_params: dict,
               *, resolution: int, degrade_config: DegradeConfig | None = None,
               tile_batch: int | None = None):
    """resolution: the training side in pixels: the default tile, and the size above
    which tiling starts. tile_batch: tiles denoised together (vmapped) per device."""
    self.backbone = backbone
    self.controlnet, self.controlnet_params = controlnet, controlnet_params
    self.resolution = resolution
    self.degrade_config = degrade_config or DegradeConfig(size=(resolution, resolution))
    self.tile_batch = tile_batch
    self.schedule = Schedule.from_config(
        {**backbone.scheduler_config, "prediction_type": backbone.prediction_type})
    self.multiple = 8 * 2 ** (len(backbone.unet[0].config.block_out_channels) - 1)
    if resolution % self.multiple:
      raise ValueError(f"resolution {resolution} is not a multiple of {self.multiple}")
    text_module = backbone.text_encoder[0]
    self._encode_text = jax.jit(lambda p, ids: text_module.apply({"params": p}, ids))
    self._programs: dict[Any, Any] = {}

  @classmethod
  def from_checkpoint(cls, path: str, step: int | None = None, use_ema: bool = True,
                      **kwargs) -> TIPRestorer:
    """A trained TIP checkpoint (and the backbone folder it names)."""
    from tip_jax.train.checkpoint import load_for_inference  # pulls in orbax/optax
    loaded = load_for_inference(path, step=step, use_ema=use_ema)
    return cls(loaded.backbone, loaded.controlnet, loaded.controlnet_params,
               resolution=loaded.resolution, degrade_config=loaded.degrade_config, **kwargs)

  def upsample_factor(self, restoration_prompt: str) -> float | None:
    """The prompt's "Upsample to Fx" factor, None if it names none; raises
    `PromptError` (naming the clause) for a prompt the model was not trained on."""
    text = " ".join(restoration_prompt.split())
    if text.lower().rstrip(" ;.") == BLIND_PROMPT.lower():
      return None
    tip_cfg = self.degrade_config.tip
    return prompts.parse(text, tip_cfg.ranges, tip_cfg.defaults).downsample

  def restore(self, image: np.ndarray, semantic_prompt: str = "",
              restoration_prompt: str = BLIND_PROMPT, steps: int = 50,
              guidance: float = DEFAULT_GUIDANCE, seed: int = 0, *, sampler: str = "ddim",
              restoration_guidance: float = 1.0, control_scale: float = 1.0,
              strength: float = 1.0, tile: int | None = None, tile_overlap: int | None = None,
              color_fix: str | None = None, upsample: bool = True,
              devices: int | None = None) -> np.ndarray:
    """uint8 (H, W, 3) (or grey / RGBA) -> restored uint8 (H', W', 3).

    guidance: w of classifier-free guidance on the semantic prompt (skipped when the
      prompt is empty: both branches would be equal). restoration_guidance: w_r > 1
      extrapolates from the "" restoration prompt towards the given one (off at 1).
    control_scale: strength of the ControlNet's modulation (1 = as trained).
    strength: < 1 starts from the input's latent noised to that fraction of the steps.
    tile: tile side in pixels (default: the model's resolution; 0 = never tile);
      tile_overlap: in pixels (default tile / 4).
    color_fix: None, "adain" or "wavelet" (towards the input's low frequencies).
    upsample: with an "Upsample to Fx" prompt, take the input as the small image and
      resize it by F (bicubic) as training did, before restoring.
    devices: spread the tiles over this many devices.
    """
    factor = self.upsample_factor(restoration_prompt) if upsample else None
    degraded = _as_rgb(image)
    if factor is not None:
      degraded = _resize(degraded, factor)
    height, width = degraded.shape[1:3]
    padded = _pad_to(degraded, self.multiple)
    call = self._layout(padded.shape[1:3], tile, tile_overlap, devices,
                        cfg=guidance != 1.0 and semantic_prompt != "",
                        restoration_cfg=restoration_guidance != 1.0)
    plan = samplers.make_plan(self.schedule, steps, sampler, strength)
    semantic, restoration = self._embeddings(call, semantic_prompt, restoration_prompt)
    vae_params = self.backbone.vae[1]
    channels = self.backbone.unet[0].config.in_channels
    noise = jax.random.normal(jax.random.key(seed), (1, *call.latent, channels))
    start = noise
    if strength < 1.0:
      z0 = self._program("encode", call)(vae_params, padded)
      start = add_noise(self.schedule, z0, noise, plan.timesteps[:1])
    scales = jnp.asarray([guidance, restoration_guidance, control_scale], jnp.float32)
    logging.info("restoring %dx%d: %d step(s) of %s, %s", width, height, plan.steps, sampler,
                 f"{len(call.tiles)} tiles" if call.tiles else "untiled")
    latent = self._program("sample", call)(self._params(), start, padded, semantic, restoration,
                                           plan, scales)
    out = self._program("decode", call)(vae_params, latent)[:, :height, :width]
    if color_fix is not None:
      out = _color_fix(out, degraded * 2 - 1, color_fix)
    return np.asarray(jnp.round(jnp.clip(out[0] + 1, 0, 2) * 127.5)).astype(np.uint8)

  def memory_bytes(self, height: int, width: int, *, tile: int | None = None,
                   tile_overlap: int | None = None, cfg: bool = True) -> dict[str, int]:
    """Peak bytes (arguments + outputs + temporaries, from XLA's memory analysis of the
    compiled programs; nothing is run) of sampling and of decoding an image this size."""
    shape = (1, -(-height // self.multiple) * self.multiple,
             -(-width // self.multiple) * self.multiple, 3)
    call = self._layout(shape[1:3], tile, tile_overlap, None, cfg=cfg, restoration_cfg=False)
    abstract = lambda x: jax.tree.map(  # noqa: E731
        lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), x)
    emb = jax.eval_shape(self._encode_text, self.backbone.text_encoder[1],
                         jnp.zeros((1 + cfg, 77), jnp.int32))
    latent = jax.ShapeDtypeStruct((1, *call.latent, self.backbone.unet[0].config.in_channels),
                                  jnp.float32)
    plan = samplers.make_plan(self.schedule, 2)
    sample_args = (abstract(self._params()), latent, jax.ShapeDtypeStruct(shape, jnp.float32),
                   emb, emb, abstract(plan), jax.ShapeDtypeStruct((3,), jnp.float32))
    out = {}
    for name, args in (("sample", sample_args),
                       ("decode", (abstract(self.backbone.vae[1]), latent))):
      stats = self._program(name, call).lower(*args).compile().memory_analysis()
      out[name] = int(stats.argument_size_in_bytes + stats.output_size_in_bytes
                      + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    return out

  def _params(self) -> dict:
    return {"unet": self.backbone.unet[1], "controlnet": self.controlnet_params}

  def _layout(self, padded: tuple[int, int], tile: int | None, overlap: int | None,
              devices: int | None, *, cfg: bool, restoration_cfg: bool) -> _Call:
    tile = self.resolution if tile is None else tile
    tiles = None
    if tile and (padded[0] > tile or padded[1] > tile):
      tile -= tile % self.multiple
      if tile < self.multiple:
        raise ValueError(f"tile must be at least {self.multiple} pixels")
      overlap = tile // 4 if overlap is None else overlap
      tiles = tiling.Tiles.cover((padded[0] // 8, padded[1] // 8), tile // 8, overlap // 8)
    return _Call((padded[0] // 8, padded[1] // 8), tiles, cfg, restoration_cfg,
                 devices if tiles else None)

  def _embeddings(self, call: _Call, semantic: str, restoration: str) -> tuple[Array, Array]:
    """CLIP states of each guidance row: (c_s, c_r), then (∅, c_r), then (c_s, "")."""
    rows = [(semantic, restoration)]
    if call.cfg:
      rows.append(("", restoration))
    if call.restoration_cfg:
      rows.append((semantic, NULL_RESTORATION))
    texts = [t for row in rows for t in row]
    ids = tokenize(self.backbone.tokenizer, texts)
    states = self._encode_text(self.backbone.text_encoder[1], ids)
    return states[0::2], states[1::2]

  def _program(self, name: str, call: _Call):
    key = (name, call)
    if key not in self._programs:
      build = {"sample": self._sample_fn, "decode": self._decode_fn, "encode": self._encode_fn}
      self._programs[key] = jax.jit(build[name](call))
    return self._programs[key]

  def _guided_fn(self, call: _Call):
    """guided(consts, x, y): the model output for one latent (tile) x and its image y,
    guidance applied; consts = (params, t, semantic rows, restoration rows, scales)."""
    unet, controlnet = self.backbone.unet[0], self.controlnet

    def guided(consts, x, y):
      params, t, semantic, restoration, scales = consts
      rows = semantic.shape[0]
      out = tip.predict(unet, controlnet, params["unet"], params["controlnet"],
                        jnp.repeat(x, rows, 0), jnp.full((rows,), t), semantic, restoration,
                        jnp.repeat(y, rows, 0), scales[2])
      m = out[0]
      if call.cfg:
        m = out[1] + scales[0] * (out[0] - out[1])
      if call.restoration_cfg:
        m = m + (scales[1] - 1) * (out[0] - out[-1])
      return m[None]

    return guided

  def _sample_fn(self, call: _Call):
    guided = self._guided_fn(call)
    mesh = tiling.tile_mesh(call.devices)

    def run(params, start, degraded, semantic, restoration, plan, scales):
      def denoise(x, t):
        consts = (params, t, semantic, restoration, scales)
        if call.tiles is None:
          return guided(consts, x, degraded)
        outs = tiling.map_tiles(lambda c, xy: guided(c, *xy), consts,
                                (call.tiles.split(x), y_tiles), mesh, self.tile_batch)
        return call.tiles.merge(outs)

      y_tiles = call.tiles.scaled(8).split(degraded) if call.tiles else None
      return samplers.sample(denoise, start, plan)

    return run

  def _vae(self, method: str):
    vae = self.backbone.vae[0]
    return lambda p, x: vae.apply({"params": p}, x, method=method)

  def _decode_fn(self, call: _Call):
    cfg = self.backbone.vae[0].config
    decode = self._vae("decode")

    def run(vae_params, latent):
      z = latent / cfg.scaling_factor + (cfg.shift_factor or 0.0)
      if call.tiles is None:
        return decode(vae_params, z)
      outs = tiling.map_tiles(lambda p, t: decode(p, t), vae_params, call.tiles.split(z))
      return call.tiles.scaled(8).merge(outs)

    return run

  def _encode_fn(self, call: _Call):
    cfg = self.backbone.vae[0].config
    encode = self._vae("encode")

    def run(vae_params, images):
      if call.tiles is None:
        mean = encode(vae_params, images)[0]
      else:
        pixel_tiles = call.tiles.scaled(8)
        outs = tiling.map_tiles(lambda p, t: encode(p, t)[0], vae_params, pixel_tiles.split(images))
        mean = call.tiles.merge(outs)
      return (mean - (cfg.shift_factor or 0.0)) * cfg.scaling_factor

    return run


_color_fix = jax.jit(colorfix.color_fix, static_argnums=2)
_resize_canvas = jax.jit(resizing.resize, static_argnums=(1, 2, 3, 4))


def _as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 (H, W), (H, W, 1|3|4) -> float32 (1, H, W, 3) in [0, 1]."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got {image.dtype}")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
    raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
  image = np.broadcast_to(image[:, :, :3], image.shape[:2] + (3,))
  return image[None].astype(np.float32) / 255.0


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

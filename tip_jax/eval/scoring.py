"""One scorer for every evaluation: the evaluator job and `tip-eval --pred --ref`.

`Scorer.load` opens the metrics a run asks for; a metric whose weights are absent is
left out with one line saying which file it needs and how to make it, and the others
still run. `Tally` accumulates per-image values and Inception features over a set and
gives `{metric: {"mean", "count"}}`, FID included (against reference statistics).

Images are uint8 (B, H, W, 3) as written to disk: the paper scores 8-bit RGB, so a
restored image is quantised before it is measured, like any other method's output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding

from tip_jax.convert.clip import load_clip
from tip_jax.errors import ConfigError, TipError
from tip_jax.experiment.sharding import leading_shards
from tip_jax.metrics import clip as clip_lib
from tip_jax.metrics import fid as fid_lib
from tip_jax.metrics import inception as inception_lib
from tip_jax.metrics import lpips as lpips_lib
from tip_jax.metrics import pixel

METRICS = ("psnr", "ssim", "lpips", "fid", "clip_i", "clip_t")
# What each weighted metric needs, for the line that says why it was left out.
_NEEDS = {
    "fid": "the Inception weights: convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
           "with `tip-convert-inception IN.pth OUT.safetensors` and pass OUT",
    "clip_i": "a local Hugging Face CLIP folder (config.json + model.safetensors, e.g. "
              "openai/clip-vit-large-patch14)",
}
_NEEDS["clip_t"] = _NEEDS["clip_i"]


def parse_metrics(names: str | Sequence[str]) -> tuple[str, ...]:
  """"psnr,ssim" or a sequence → a tuple in `METRICS` order; unknown names are a
  `ConfigError`."""
  if isinstance(names, str):
    names = [n for n in names.replace(" ", "").split(",") if n]
  unknown = sorted(set(names) - set(METRICS))
  if unknown:
    raise ConfigError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
  return tuple(m for m in METRICS if m in names)


@dataclasses.dataclass
class Scorer:
  """The loaded metrics; `per_image` and `features` take uint8 batches."""

  metrics: tuple[str, ...]
  lpips: lpips_lib.LPIPS | None = None
  inception: inception_lib.Inception | None = None
  clip: clip_lib.CLIPScorer | None = None
  crop_border: int = 0
  y_channel: bool = False
  sharding: NamedSharding | None = None  # batch sharding over the mesh, when it divides

  @classmethod
  def load(cls, metrics: str | Sequence[str], *, lpips_net: str = "alex",
           lpips_weights: str | None = None, inception: str = "", clip: str = "",
           crop_border: int = 0, y_channel: bool = False,
           sharding: NamedSharding | None = None) -> Scorer:
    """Opens `metrics`; one the weights of which are missing is left out with one
    warning line (an unreadable file given explicitly is an error: it was asked for)."""
    wanted = parse_metrics(metrics)
    kept, loaded = [], {}
    for name in wanted:
      if name == "lpips":
        loaded["lpips"] = lpips_lib.load_lpips(lpips_net, lpips_weights)
      elif name == "fid" and "inception" not in loaded:
        if not inception:
          logging.warning("fid left out: it needs %s (--inception / evals.inception)",
                          _NEEDS["fid"])
          continue
        loaded["inception"] = inception_lib.load_inception(inception)
      elif name in ("clip_i", "clip_t") and "clip" not in loaded:
        if not clip:
          both = [m for m in wanted if m.startswith("clip")]
          if name == both[-1]:  # one line for clip_i and clip_t
            logging.warning("%s left out: it needs %s (--clip / evals.clip)",
                            " and ".join(both), _NEEDS[name])
          continue
        loaded["clip"] = load_clip(clip)
      kept.append(name)
    return cls(metrics=tuple(kept), crop_border=crop_border, y_channel=y_channel,
               sharding=sharding, **loaded)

  def _device(self, images: np.ndarray) -> jax.Array:
    x = np.asarray(images, np.float32) / 255.0
    if self.sharding is not None and len(x) % leading_shards(self.sharding) == 0:
      return jax.device_put(x, self.sharding)
    return jax.numpy.asarray(x)

  def per_image(self, pred: np.ndarray, ref: np.ndarray,
                captions: Sequence[str | None] | None = None) -> dict[str, np.ndarray]:
    """uint8 (B, H, W, 3) pairs → {metric: (B,) float64} for every per-image metric
    (all but FID); CLIP-T of the images that have a caption (None = no caption)."""
    if pred.shape != ref.shape:
      raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    p, r = self._device(pred), self._device(ref)
    out = {}
    if "psnr" in self.metrics:
      out["psnr"] = pixel.psnr(p, r, crop_border=self.crop_border, y_channel=self.y_channel)
    if "ssim" in self.metrics:
      out["ssim"] = pixel.ssim(p, r, crop_border=self.crop_border, y_channel=self.y_channel)
    if "lpips" in self.metrics:
      out["lpips"] = self.lpips(p, r)
    if self.clip is not None:
      pred_emb = self.clip.image_embeds(pred / 255.0)
      if "clip_i" in self.metrics:
        out["clip_i"] = clip_lib.cosine(pred_emb, self.clip.image_embeds(ref / 255.0))
      known = [i for i, c in enumerate(captions or []) if c is not None]
      if "clip_t" in self.metrics and known:
        out["clip_t"] = clip_lib.cosine(pred_emb[np.asarray(known)],
                                        self.clip.text_embeds([captions[i] for i in known]))
    return {k: np.asarray(jax.device_get(v), np.float64) for k, v in out.items()}

  def features(self, images: np.ndarray) -> np.ndarray | None:
    """(B, 2048) Inception pool3 features for FID, or None when FID is not scored."""
    if "fid" not in self.metrics:
      return None
    return np.asarray(jax.device_get(self.inception.features(self._device(images))))


class Tally:
  """Per-image values and FID statistics of one (set, prompt mode), batch by batch."""

  def __init__(self, scorer: Scorer):
    self.scorer = scorer
    self.values: dict[str, list[np.ndarray]] = {}
    self.count = 0  # image pairs added
    self.pred_stats = fid_lib.FeatureStats() if "fid" in scorer.metrics else None
    self.ref_stats = fid_lib.FeatureStats() if "fid" in scorer.metrics else None

  def add(self, pred: np.ndarray, ref: np.ndarray,
          captions: Sequence[str | None] | None = None, *, ref_features: bool = True) -> None:
    """Scores a batch; `ref_features=False` when the reference statistics come from
    elsewhere (`result(ref_stats=...)`, the evaluator's cached ground-truth stats)."""
    self.count += len(pred)
    for name, v in self.scorer.per_image(pred, ref, captions).items():
      self.values.setdefault(name, []).append(v)
    if self.pred_stats is not None:
      self.pred_stats.add(self.scorer.features(pred))
      if ref_features:
        self.ref_stats.add(self.scorer.features(ref))

  def result(self, ref_stats: fid_lib.Stats | None = None) -> dict[str, dict]:
    """{metric: {"mean": float, "count": int}}; PSNR's mean skips identical pairs
    (infinite PSNR) and counts them in "identical"."""
    out = {}
    for name, chunks in self.values.items():
      v = np.concatenate(chunks)
      finite = v[np.isfinite(v)]
      out[name] = {"mean": float(finite.mean()) if len(finite) else float("nan"),
                   "count": int(len(v))}
      if len(finite) < len(v):
        out[name]["identical"] = int(len(v) - len(finite))
    if self.pred_stats is not None and self.pred_stats.count:
      ref = ref_stats or (self.ref_stats.stats() if self.ref_stats.count >= 2 else None)
      if ref is None or self.pred_stats.count < 2:
        raise TipError("FID needs at least 2 images on each side")
      pred = self.pred_stats.stats()
      out["fid"] = {"mean": fid_lib.frechet_distance(pred.mu, pred.sigma, ref.mu, ref.sigma),
                    "count": int(pred.count)}
    return out

"""Flags and set-up shared by `tip-restore` and `tip-walk`: the checkpoint, the sampling
options, and loading a restorer with one clear line on failure."""

from __future__ import annotations

from absl import flags

from tip_jax.cli.common import SEED, fail
from tip_jax.degrade import prompts
from tip_jax.diffusion import colorfix, samplers
from tip_jax.errors import PromptError, TipError
from tip_jax.restore import DEFAULT_GUIDANCE, TIPRestorer

CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Trained TIP checkpoint (workdir).")
SEMANTIC = flags.DEFINE_string("semantic", "", "Semantic prompt c_s (\"\" = none).")
STEPS = flags.DEFINE_integer("steps", 50, "Sampling steps.")
GUIDANCE = flags.DEFINE_float("guidance", DEFAULT_GUIDANCE, "Classifier-free guidance scale "
                              "on the semantic prompt.")
RESTORATION_GUIDANCE = flags.DEFINE_float("restoration_guidance", 1.0, "Guidance scale on "
                                          "the restoration prompt (1 = off).")
CONTROL_SCALE = flags.DEFINE_float("control_scale", 1.0, "ControlNet modulation strength.")
STRENGTH = flags.DEFINE_float("strength", 1.0, "Below 1: start from the input's latent, "
                              "noised to this fraction of the steps.")
SAMPLER = flags.DEFINE_enum("sampler", "ddim", sorted(samplers.SAMPLERS), "Sampler.")
TILE = flags.DEFINE_integer("tile", None, "Tile side in pixels (default: the model's "
                            "resolution; 0 = never tile).")
TILE_OVERLAP = flags.DEFINE_integer("tile_overlap", None, "Tile overlap in pixels "
                                    "(default: tile / 4).")
COLOR_FIX = flags.DEFINE_enum("color_fix", None, list(colorfix.METHODS), "Colour correction "
                              "towards the input (default: none).")
COLOR_FIX_LEVELS = flags.DEFINE_integer("color_fix_levels", colorfix.LEVELS, "Levels of the "
                                        "wavelet colour fix (fewer keep more of the input).")
SAMPLES = flags.DEFINE_integer("samples", 1, "Restorations drawn per image and averaged "
                               "(a posterior-mean estimate: higher PSNR, smoother).")
DEVICES = flags.DEFINE_integer("devices", None, "Spread tiles over this many devices.")


def check_options(prog: str) -> None:
  """One line and exit for sampling options no restore could run with."""
  problems = [(STEPS.value < 1, "--steps must be at least 1"),
              (not 0 < STRENGTH.value <= 1, "--strength must be in (0, 1]"),
              ((TILE.value or 0) < 0, "--tile must be 0 (no tiling) or a size in pixels"),
              ((TILE_OVERLAP.value or 0) < 0, "--tile_overlap must not be negative"),
              (bool(TILE.value) and (TILE_OVERLAP.value or 0) >= TILE.value,
               "--tile_overlap must be smaller than --tile"),
              ((DEVICES.value or 1) < 1, "--devices must be at least 1"),
              (COLOR_FIX_LEVELS.value < 1, "--color_fix_levels must be at least 1"),
              (SAMPLES.value < 1, "--samples must be at least 1")]
  for bad, message in problems:
    if bad:
      fail(prog, message)


def canonical_prompt(text: str) -> str:
  """The prompt's training form (`prompts.canonical`), for labels and early checks; the
  restorer puts every prompt in this form itself (with the checkpoint's ranges, warning
  beyond them). Type-only clauses keep no value. Raises PromptError."""
  return prompts.canonical(text, defaults={c.field: 1.0 for c in prompts.CLAUSES})[0]


def check_prompt_wording(prog: str, text: str) -> None:
  """Fails fast, before anything is loaded, on a prompt that cannot parse at all."""
  try:
    canonical_prompt(text)
  except PromptError as e:
    fail(prog, f"restoration prompt: {e}")


def load_restorer(prog: str) -> TIPRestorer:
  if not CHECKPOINT.value:
    fail(prog, "--checkpoint is required")
  from tip_jax.experiment import checkpoint_files  # pulls in TensorStore
  checkpoint_files.quiet_background_failures()  # a damaged checkpoint: one line, no more
  try:
    return TIPRestorer.from_checkpoint(CHECKPOINT.value)
  except (TipError, FileNotFoundError) as e:
    fail(prog, f"cannot load checkpoint {CHECKPOINT.value}: {e}")


def restore_options() -> dict:
  """Keyword arguments of `TIPRestorer.restore` from the shared flags."""
  return dict(semantic_prompt=SEMANTIC.value, steps=STEPS.value, guidance=GUIDANCE.value,
              seed=SEED.value, sampler=SAMPLER.value,
              restoration_guidance=RESTORATION_GUIDANCE.value,
              control_scale=CONTROL_SCALE.value, strength=STRENGTH.value, tile=TILE.value,
              tile_overlap=TILE_OVERLAP.value, color_fix=COLOR_FIX.value,
              color_fix_levels=COLOR_FIX_LEVELS.value, samples=SAMPLES.value,
              devices=DEVICES.value)

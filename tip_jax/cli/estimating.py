"""The degradation estimator's flag and its loading with one clear line, shared by
tip-estimate, tip-restore (`--restoration auto`) and tip-demo (absl allows one
definition per flag name in a process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from absl import flags

from tip_jax.cli.common import fail
from tip_jax.errors import TipError

if TYPE_CHECKING:
  from tip_jax.estimate import Estimator

ESTIMATOR = flags.DEFINE_string("estimator", None, "Degradation estimator folder "
                                "(model.safetensors + config.json; default: the one "
                                "installed with tip_jax, tip_jax/assets/estimator).")


def load(prog: str) -> Estimator:
  from tip_jax.estimate import load as load_estimator  # deferred: JAX starts only when used
  try:
    return load_estimator(ESTIMATOR.value)
  except TipError as e:
    fail(prog, f"cannot load the degradation estimator: {e}")

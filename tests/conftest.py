"""Test set-up: 8 fake CPU devices, forced before jax is imported anywhere."""

import functools
import os
import tempfile

# LLVM at -O0: XLA's CPU compile time is most of a tiny training run's, and the tests'
# programs run a few steps on tiny shapes, so optimising the machine code is not worth
# it (the tiny train step compiles in 30 s instead of 48; convolutions and matmuls are
# library calls either way). Subprocesses the tests start inherit it.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {TEST_XLA_FLAGS}"
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the session and the subprocesses tests start: the trainer
# tests compile the same tiny step in several processes.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "tip_jax_test_compile_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402  (must follow the XLA_FLAGS line above)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

from tests.fixtures.torch_refs import torchvision  # noqa: E402
from tip_jax.experiment import components  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# transformers' and diffusers' torch models (the parity references) import torchvision,
# which imports beside the CPU torch wheel only after this (see the fixture).
torchvision()
# Grain's worker processes read absl flags at start-up; under pytest no absl app has
# parsed them (the entry points' `app.run` does), and their defaults are what we want.
flags.FLAGS.mark_as_parsed()
# A random backbone is a pure function of (geometry, seed, options): the session's many
# in-process runs (trainer, evaluator, restorer) build each one once, not once per run
# (~4 s of tracing and compile-cache reads each). Its arrays are never donated.
components.random_backbone = functools.cache(components.random_backbone)


@pytest.fixture
def rng() -> np.random.Generator:
  return np.random.default_rng(0)

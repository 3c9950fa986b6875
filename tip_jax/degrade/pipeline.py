"""TIP's training degradation: Real-ESRGAN (blind) or the parameterised pipeline.

The paper draws Real-ESRGAN in 50% of the iterations and the parameterised pipeline in
the others (Tab. 2); `DegradeConfig.mix` picks that ("step": one draw for the whole
batch, on device, from the step) or a draw per example ("example", the default: every
batch holds both kinds, with the same expected share).

Host: `sample_params` draws every example's parameters from (seed, example index)
alone, so any process can reproduce any example, and writes its restoration prompt.
Device: `degrade` is pure JAX (jit/vmap-able, static shapes, no callbacks). On a mesh,
`degrade_sharded` runs it under `shard_map` (`per_device`), so each device degrades
its own examples with no communication: GSPMD does not partition FFTs, and left to
itself it would gather the batch and filter every image on every device.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, PartitionSpec

from tip_jax.degrade import parameterized, prompts, realesrgan

TIP, REALESRGAN = 0, 1
MIXES = ("example", "step")


@dataclasses.dataclass(frozen=True)
class DegradeConfig:
  """size: (H, W) of the clean images the parameters are drawn for (static)."""

  size: tuple[int, int] = (512, 512)
  realesrgan_prob: float = 0.5
  # How examples are looped on device: "vmap" (one batched program; both sides of each
  # per-example choice are computed and selected — best on GPU/TPU), "map" (`lax.map`:
  # one example at a time, only the chosen branches run, and the Real-ESRGAN chain
  # uses the large canvas only when the first resize upscales — best on CPU), or
  # "auto" (map on CPU, vmap elsewhere). Results agree to float32 op-order effects.
  loop: str = "auto"
  # Where the Real-ESRGAN / parameterised choice is drawn: "example" (each example on the
  # host) or "step" (the paper's: the host draws parameterised stages for every example
  # and `mix_per_step` picks the pipeline of the whole batch on device).
  mix: str = "example"
  tip: parameterized.TIPConfig = parameterized.TIPConfig()
  realesrgan: realesrgan.RealESRGANConfig = realesrgan.RealESRGANConfig.x4plus()


@struct.dataclass
class DegradeParams:
  """Per-example arrays (a pytree; the config rides along as static metadata).

  Both pipelines' parameters are present for every example; `pipeline` picks one.
  """

  pipeline: np.ndarray               # (B,) TIP or REALESRGAN
  noise_seed: np.ndarray             # (B,) uint32, seeds each example's noise
  tip: parameterized.TIPParams
  realesrgan: realesrgan.RealESRGANParams
  config: DegradeConfig = struct.field(pytree_node=False)

  @property
  def batch(self) -> int:
    return int(np.shape(self.pipeline)[0])


def _example_rng(seed: int, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, index])


def sample_params(seed_or_rng: int | np.random.Generator, batch: int,
                  config: DegradeConfig = DegradeConfig(),
                  indices: Sequence[int] | None = None) -> tuple[DegradeParams, list[str]]:
  """Draws `batch` examples' parameters and their restoration prompts.

  With an int seed, example i depends only on (seed, indices[i]) (default
  indices 0..batch-1): a data pipeline passes record indices so that any host,
  worker or restart reproduces the same degradation for the same record.
  A Generator is drawn from sequentially instead.
  """
  if indices is None:
    indices = range(batch)
  if len(indices) != batch:
    raise ValueError(f"{len(indices)} indices for a batch of {batch}")
  rngs = ([_example_rng(seed_or_rng, int(i)) for i in indices]
          if not isinstance(seed_or_rng, np.random.Generator) else [seed_or_rng] * batch)
  if config.mix not in MIXES:
    raise ValueError(f"DegradeConfig.mix={config.mix!r}: expected one of {MIXES}")
  pipelines, seeds, stages, draws = [], [], [], []
  for rng in rngs:
    blind = rng.random() < config.realesrgan_prob
    pipelines.append(REALESRGAN if blind and config.mix == "example" else TIP)
    seeds.append(rng.integers(2**32, dtype=np.uint32))
    stages.append(parameterized.sample(rng, config.tip))
    draws.append(realesrgan.sample(rng, config.realesrgan, config.size))
  params = DegradeParams(pipeline=np.asarray(pipelines, np.int32),
                         noise_seed=np.asarray(seeds, np.uint32),
                         tip=parameterized.to_arrays(stages),
                         realesrgan=realesrgan.to_arrays(draws), config=config)
  return params, restoration_prompt(params, with_values=None)


def mix_per_step(params: DegradeParams, key: jax.Array) -> tuple[DegradeParams, jax.Array]:
  """`mix="step"`: one draw from `key` (derive it from the step) makes the whole batch
  Real-ESRGAN with probability `realesrgan_prob`; returns the params with every example's
  pipeline set, and whether it is Real-ESRGAN (the caller swaps in the blind prompt).
  jit-safe; with `mix="example"` the params are returned as drawn."""
  if params.config.mix == "example":
    return params, jnp.zeros((), bool)
  blind = jax.random.uniform(key) < params.config.realesrgan_prob
  pipeline = jnp.where(blind, REALESRGAN, jnp.asarray(params.pipeline))
  return params.replace(pipeline=pipeline.astype(jnp.int32)), blind


def restoration_prompt(params: DegradeParams, with_values: bool | None = True) -> list[str]:
  """Each example's prompt; with_values=None keeps each example's sampled choice."""
  stages = parameterized.from_arrays(params.tip)
  return [prompts.BLIND_PROMPT if kind == REALESRGAN else s.prompt(with_values)
          for kind, s in zip(np.asarray(params.pipeline), stages)]


def parse_restoration_prompt(text: str, config: DegradeConfig = DegradeConfig()
                             ) -> DegradeParams:
  """A typed prompt -> batch-of-one params that `degrade` applies.

  Type-only clauses ("Deblur;") apply the middle of the configured range. Raises
  `prompts.PromptError` naming the clause for unknown wording or out-of-range values.
  """
  stages = prompts.parse(text, config.tip.ranges, config.tip.defaults)
  # Every example carries both pipelines' parameters; `pipeline` = TIP ignores these.
  filler = realesrgan.to_arrays([realesrgan.sample(np.random.default_rng(0), config.realesrgan,
                                                   config.size)])
  return DegradeParams(pipeline=np.asarray([TIP], np.int32),
                       noise_seed=np.zeros(1, np.uint32),
                       tip=parameterized.to_arrays([stages]), realesrgan=filler, config=config)


def _path_keys(path) -> tuple[str, ...]:
  return tuple(getattr(k, "name", None) or k.key for k in path)


def params_to_tree(params: DegradeParams) -> dict[str, Any]:
  """A batch-of-one `DegradeParams` -> nested dict of its leaves, batch axis removed: an
  example's parameters as a data pipeline carries them (batched by stacking)."""
  tree: dict[str, Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    *parents, last = _path_keys(path)
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[last] = np.asarray(leaf)[0]
  return tree


@functools.lru_cache(maxsize=None)
def _params_layout(config: DegradeConfig):
  flat, treedef = jax.tree_util.tree_flatten_with_path(sample_params(0, 1, config)[0])
  return [_path_keys(path) for path, _ in flat], treedef


def params_from_tree(tree: dict[str, Any], config: DegradeConfig) -> DegradeParams:
  """Stacked `params_to_tree` dicts -> `DegradeParams` for `degrade`; numpy or jax leaves
  (jit-safe: only the tree structure is read on the host)."""
  paths, treedef = _params_layout(config)
  leaves = []
  for keys in paths:
    node = tree
    for key in keys:
      node = node[key]
    leaves.append(node)
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _loop(config: DegradeConfig) -> str:
  loop = config.loop
  if loop == "auto":
    loop = "map" if jax.default_backend() == "cpu" else "vmap"
  if loop not in ("map", "vmap"):
    raise ValueError(f"DegradeConfig.loop={loop!r}: expected 'auto', 'map' or 'vmap'")
  return loop


def _check_size(images: jax.Array, config: DegradeConfig) -> None:
  if tuple(images.shape[1:3]) != tuple(config.size):
    raise ValueError(f"images are {images.shape[1:3]}, the params were drawn for {config.size}")


def _keys(seed: jax.Array) -> tuple[jax.Array, jax.Array]:
  """An example's (parameterised, Real-ESRGAN) keys from its noise seed."""
  key_tip, key_esr = jax.random.split(jax.random.key(seed))
  return key_tip, key_esr


def degrade(images: jax.Array, params: DegradeParams) -> jax.Array:
  """(B, H, W, 3) float32 in [0, 1] -> degraded images of the same shape, in [0, 1]."""
  config = params.config
  _check_size(images, config)
  loop = _loop(config)

  def one(args):
    image, kind, seed, tip_p, esr_p = args
    key_tip, key_esr = _keys(seed)
    return jax.lax.cond(
        kind == REALESRGAN,
        lambda: realesrgan.apply(image, esr_p, key_esr, config.realesrgan,
                                 bucketed=loop == "map"),
        lambda: parameterized.apply(image, tip_p, key_tip, config.tip,
                                    bucketed=loop == "map"))

  args = (images.astype(jnp.float32), params.pipeline, params.noise_seed, params.tip,
          params.realesrgan)
  return jax.lax.map(one, args) if loop == "map" else jax.vmap(one)(args)


def degrade_blind(images: jax.Array, params: DegradeParams) -> tuple[jax.Array, jax.Array]:
  """Real-ESRGAN for every example, whatever `params.pipeline` says: the small LQ
  (B, H/s, W/s, 3) on the 8-bit grid, and the (B, H, W, 3) image `degrade` gives a
  Real-ESRGAN example (that LQ, bicubic). For benchmark sets, which store both: a
  ControlNet-SR model is given the second, an SR model the first."""
  config = params.config
  _check_size(images, config)
  loop = _loop(config)

  def one(args):
    image, seed, esr_p = args
    lq = realesrgan.apply_lq(image, esr_p, _keys(seed)[1], config.realesrgan,
                             bucketed=loop == "map")
    return lq, realesrgan.upsample(lq, image.shape[:2])

  args = (images.astype(jnp.float32), params.noise_seed, params.realesrgan)
  return jax.lax.map(one, args) if loop == "map" else jax.vmap(one)(args)


def per_device(program: Callable[..., Any], mesh: Mesh,
               batch_axes: str | tuple[str, ...] = ("data", "fsdp")) -> Callable[..., Any]:
  """`program(images, params)` (`degrade` or `degrade_blind`) with the batch split over
  `batch_axes` of `mesh`: each device degrades its own examples, with no communication."""
  spec = PartitionSpec(batch_axes)
  # check_vma=False: under the "vmap" loop, `lax.cond` becomes a select that mixes the
  # per-device arrays with replicated constants, which the varying-axes check rejects
  # although every output row depends only on its own device's rows.
  return jax.shard_map(program, mesh=mesh, in_specs=(spec, spec), out_specs=spec,
                       check_vma=False)


def degrade_sharded(images: jax.Array, params: DegradeParams, mesh: Mesh,
                    batch_axes: str | tuple[str, ...] = ("data", "fsdp")) -> jax.Array:
  """`degrade` with the batch split over `batch_axes` of `mesh`, per device."""
  return per_device(degrade, mesh, batch_axes)(images, params)

"""Usage: tip-models [--geometry tiny|sd15|sd21 | --backbone DIR] [--forward]

Sizes of every TIP component and, optionally, one forward at init.

    tip-models                              # tiny geometry: sizes + a TIP forward on CPU
    tip-models --geometry sd15              # full SD1.5 sizes (nothing allocated)
    tip-models --backbone /path/to/sd15     # load a diffusers folder, count what it holds

The forward check runs the frozen UNet alone and UNet + TIP ControlNet (initialised
from the UNet) on the same random input and reports the largest difference, which
must be exactly 0: the fusion layers start at zero for every variant.
"""

from __future__ import annotations

import json
import math
import sys
import time

import jax
import jax.numpy as jnp
from absl import flags
from flax.traverse_util import flatten_dict

from tip_jax.cli import common
from tip_jax.convert.diffusers import load_backbone
from tip_jax.models import params as params_lib
from tip_jax.models import tip
from tip_jax.models.backbone import GEOMETRIES, random_backbone
from tip_jax.models.controlnet import (FUSIONS, ControlNetConfig, ControlNetModel,
                                       controlnet_params_from_unet)
from tip_jax.models.unet import UNet2DConditionModel, UNetConfig

PROG = "tip-models"
_GEOMETRY = flags.DEFINE_enum("geometry", "tiny", sorted(GEOMETRIES), "Preset geometry.")
_BACKBONE = flags.DEFINE_string("backbone", None, "A diffusers SD folder; overrides --geometry.")
_FORWARD = flags.DEFINE_bool("forward", None, "Run the identity-at-init forward "
                             "(default: on for tiny, off otherwise).")


def controlnet_breakdown(controlnet: ControlNetModel) -> dict[str, int]:
  """Parameters of the UNet-encoder copy, E' and the fusion convs."""
  parts = {"encoder_copy": 0, "e_prime": 0, "fusion": 0}
  for path, leaf in flatten_dict(params_lib.param_shapes(controlnet)).items():
    part = ("e_prime" if path[0] == "controlnet_cond_embedding" else
            "fusion" if path[0].startswith(("controlnet_down_blocks", "controlnet_mid_block"))
            else "encoder_copy")
    parts[part] += math.prod(leaf.shape)
  parts["total"] = sum(parts.values())
  return parts


def sizes(unet_cfg: UNetConfig, modules: dict, factor: int) -> dict:
  report = {name: params_lib.count_params(params_lib.abstract_params(m))
            for name, m in modules.items()}
  for fusion in FUSIONS:
    report[f"tip_controlnet/{fusion}"] = controlnet_breakdown(
        ControlNetModel(ControlNetConfig.tip(unet_cfg, fusion, factor)))
  return report


def identity_forward(unet: UNet2DConditionModel, unet_params: dict, text_dim: int,
                     factor: int) -> dict:
  """max |TIP - frozen UNet| at initialisation, per fusion variant (expected: 0.0)."""
  rng = jax.random.key(0)
  z, t, text = unet.example_inputs(2)
  z = jax.random.normal(rng, z.shape)
  text = jax.random.normal(rng, (2, 77, text_dim))
  y = jax.random.uniform(rng, (2, factor * z.shape[1], factor * z.shape[2], 3),
                         minval=-1, maxval=1)
  t = jnp.array([10, 900])
  frozen = unet.apply({"params": unet_params}, z, t, text)
  out = {}
  for fusion in FUSIONS:
    start = time.perf_counter()
    controlnet = ControlNetModel(ControlNetConfig.tip(unet.config, fusion, factor))
    cn_params = controlnet_params_from_unet(controlnet, unet_params, jax.random.key(1))
    pred = tip.predict(unet, controlnet, unet_params, cn_params, z, t, text, text[::-1], y)
    out[fusion] = {"max_abs_diff_vs_unet": float(jnp.abs(pred - frozen).max()),
                   "seconds": round(time.perf_counter() - start, 2)}
  return out


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(PROG, f"unexpected arguments {' '.join(argv[1:])}")
  if _BACKBONE.value:
    backbone = load_backbone(_BACKBONE.value)
    source = {"source": _BACKBONE.value, "prediction_type": backbone.prediction_type}
  else:
    backbone = random_backbone(_GEOMETRY.value, 0, abstract=True)
    source = {"source": f"geometry:{_GEOMETRY.value}"}
  unet = backbone.unet.module
  factor = backbone.vae.module.config.downsample_factor
  report = {**source, **sizes(unet.config, {"unet": unet, "vae": backbone.vae.module,
                                            "text_encoder": backbone.text_encoder.module},
                              factor)}
  forward = _FORWARD.value if _FORWARD.value is not None else _GEOMETRY.value == "tiny"
  if forward:
    unet_params = (backbone.unet.params if _BACKBONE.value else
                   params_lib.init_params(unet, jax.random.key(0)))
    text_dim = backbone.text_encoder.module.config.hidden_size
    report["identity_at_init"] = identity_forward(unet, unet_params, text_dim, factor)
  print(json.dumps(report, indent=2))


def run() -> None:
  common.run(main, PROG, __doc__, [sys.modules[__name__]])


if __name__ == "__main__":
  run()

"""On-device degradation synthesis and the restoration-prompt language.

    params, prompts = sample_params(seed, batch, DegradeConfig(size=(512, 512)))   # host
    y = jax.jit(degrade)(x, params)                                                 # device
"""

from tip_jax.degrade.pipeline import (DegradeConfig, DegradeParams, degrade, degrade_blind,
                                      degrade_sharded, params_from_tree, params_to_tree,
                                      parse_restoration_prompt, per_device,
                                      restoration_prompt, sample_params)
from tip_jax.degrade.prompts import BLIND_PROMPT

__all__ = ["BLIND_PROMPT", "DegradeConfig", "DegradeParams", "degrade", "degrade_blind",
           "degrade_sharded", "params_from_tree", "params_to_tree", "parse_restoration_prompt",
           "per_device", "restoration_prompt", "sample_params"]

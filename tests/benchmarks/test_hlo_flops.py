"""benchmarks/hlo_flops.py: matmul and convolution FLOPs read from optimized HLO agree with
PyTorch's FlopCounterMode on the same layers, forward and backward, and count loops by
their trip count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import hlo_flops

# Two convolutions (3x3 stride 2, 1x1) and a dense layer, NHWC / HWIO, as in our models.
SHAPES = {"x": (2, 16, 16, 3), "w1": (3, 3, 3, 8), "w2": (1, 1, 8, 4), "w3": (4, 5)}


def _ours(params, x):
  h = jax.lax.conv_general_dilated(x, params["w1"], (2, 2), ((1, 1), (1, 1)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  h = jax.lax.conv_general_dilated(jnp.tanh(h), params["w2"], (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.sum(jnp.tanh(h) @ params["w3"])


def _torch(params, x):
  h = torch.nn.functional.conv2d(x, params["w1"], stride=2, padding=1)
  h = torch.nn.functional.conv2d(torch.tanh(h), params["w2"])
  return (torch.tanh(h).permute(0, 2, 3, 1) @ params["w3"]).sum()


def _compiled_flops(fn, *args):
  return hlo_flops.total(hlo_flops.matmul_ops(jax.jit(fn).lower(*args).compile().as_text()))


@pytest.mark.parametrize("input_grad", [False, True])
def test_forward_and_backward_agree_with_flop_counter_mode(input_grad):
  """The backward of a stride-2 conv convolves a 2x-dilated input: counted as torch does."""
  r = np.random.default_rng(0)
  arrays = {k: r.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
  params = {k: v for k, v in arrays.items() if k != "x"}
  # value_and_grad: with the loss unused, XLA would drop the last forward matmul.
  ours = _compiled_flops(jax.value_and_grad(_ours, argnums=(0, 1) if input_grad else 0),
                         params, arrays["x"])

  to_torch = {"x": (0, 3, 1, 2), "w1": (3, 2, 0, 1), "w2": (3, 2, 0, 1), "w3": (0, 1)}
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(to_torch[k])))
             .requires_grad_(k != "x" or input_grad) for k, v in arrays.items()}
  with FlopCounterMode(display=False) as counter:
    _torch({k: v for k, v in tensors.items() if k != "x"}, tensors["x"]).backward()
  assert ours == counter.get_total_flops()
  assert _compiled_flops(_ours, params, arrays["x"]) == 2 * (
      2 * 8 * 8 * 8 * 9 * 3 + 2 * 8 * 8 * 4 * 8 + 2 * 8 * 8 * 5 * 4)   # forward alone


def test_loops_count_every_trip_and_conditionals_their_costlier_branch():
  m = jnp.ones((16, 16))

  def loop(x):
    return jax.lax.scan(lambda c, _: (c @ m, None), x, None, length=5)[0]

  def branch(x, p):
    return jax.lax.cond(p, lambda v: v @ m @ m, lambda v: v @ m, x)

  x = jnp.ones((8, 16))
  one = 2 * 8 * 16 * 16
  assert _compiled_flops(loop, x) == 5 * one
  assert _compiled_flops(branch, x, True) == 2 * one
  ops = hlo_flops.matmul_ops(jax.jit(loop).lower(x).compile().as_text())
  assert [op.kind for op in ops] == ["dot"] and "while" in ops[0].op_name

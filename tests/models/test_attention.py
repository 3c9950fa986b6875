"""Blocked attention: value and gradients against PyTorch's scaled_dot_product_attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tip_jax.models.attention import blocked_attention
from tip_jax.models.layers import ModelOptions, multi_head_attention


def _draw(seed: int, *shapes) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _torch_attention(q, k, v, g):
  """Output and (dq, dk, dv) of PyTorch's attention for (B, T, N, D) arrays."""
  q, k, v = (torch.from_numpy(x).permute(0, 2, 1, 3).requires_grad_() for x in (q, k, v))
  out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
  out.backward(torch.from_numpy(g).permute(0, 2, 1, 3))
  back = lambda x: x.permute(0, 2, 1, 3).detach().numpy()
  return back(out), tuple(back(x.grad) for x in (q, k, v))


@pytest.mark.parametrize("tq,tk,chunk", [(64, 64, 16), (64, 77, 32), (96, 40, 96)])
def test_blocked_attention_matches_pytorch(tq, tk, chunk):
  """Self- and cross-attention (77 context tokens), several blocks or one: float32 max
  abs difference below 2e-6 in the output and 5e-6 in every gradient (measured: 3.6e-7
  and 1.3e-6)."""
  q, g = _draw(0, (2, tq, 3, 8), (2, tq, 3, 8))
  k, v = _draw(1, (2, tk, 3, 8), (2, tk, 3, 8))
  out, vjp = jax.vjp(lambda *a: blocked_attention(*a, chunk), q, k, v)
  grads = vjp(jnp.asarray(g))
  ref_out, ref_grads = _torch_attention(q, k, v, g)
  np.testing.assert_allclose(out, ref_out, atol=2e-6)
  for ours, ref in zip(grads, ref_grads):
    np.testing.assert_allclose(ours, ref, atol=5e-6)


def test_blocked_attention_in_bfloat16_keeps_dtype_and_stays_close():
  """bf16 operands: outputs and gradients bf16, within bf16 rounding of the f32 result."""
  q, k, v, g = _draw(2, *[(1, 64, 2, 16)] * 4)
  f32 = jax.vjp(lambda *a: blocked_attention(*a, 16), q, k, v)
  bf16 = jax.vjp(lambda *a: blocked_attention(*a, 16),
                 *(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)))
  assert bf16[0].dtype == jnp.bfloat16
  np.testing.assert_allclose(bf16[0].astype(jnp.float32), f32[0], atol=3e-2)
  for ours, ref in zip(bf16[1](jnp.asarray(g, jnp.bfloat16)), f32[1](jnp.asarray(g))):
    assert ours.dtype == jnp.bfloat16
    np.testing.assert_allclose(ours.astype(jnp.float32), ref, atol=6e-2)


def test_multi_head_attention_blocks_only_what_divides():
  """The query chunk applies to non-causal attentions whose length it divides; others
  (causal, or 72 queries for a chunk of 32) take JAX's attention, with the same result."""
  q, k, v = _draw(3, (1, 72, 16), (1, 72, 16), (1, 72, 16))
  chunked, plain = ModelOptions(attention_query_chunk=32), ModelOptions()
  for causal in (False, True):
    np.testing.assert_allclose(multi_head_attention(q, k, v, 2, chunked, causal=causal),
                               multi_head_attention(q, k, v, 2, plain, causal=causal),
                               atol=1e-6)
  lowered = jax.jit(lambda *a: multi_head_attention(*a, 2, chunked)).lower(
      q[:, :64], k[:, :64], v[:, :64]).as_text()
  assert "while" in lowered  # 64 queries: two blocks of 32, one after the other


def test_query_chunk_and_cudnn_are_one_clear_error():
  with pytest.raises(ValueError, match="set one of them"):
    ModelOptions(attention_impl="cudnn", attention_query_chunk=128)

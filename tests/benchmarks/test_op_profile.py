"""benchmarks/op_profile.py: HLO instructions and ATen ops sorted into the same kinds,
and a profiled program's time counted once per executed instruction."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from benchmarks import op_profile

HLO = """
%body (t: (s32[], f32[4,4])) -> (s32[], f32[4,4]) {
  %dot.9 = f32[4,4]{1,0} dot(%e, %f), metadata={op_name="jit(f)/UNet2DConditionModel/down_blocks_0/attentions_0/transformer_blocks_0/attn1/while/body/bnts,bnsd->bntd/dot_general"}
  %fusion.11 = f32[4,4]{1,0} fusion(%g, %h), kind=kCustom
}

ENTRY %main (p: f32[4,4]) -> (f32[4,4], s32[]) {
  %convolution.3 = f32[1,8,8,4]{3,2,1,0} convolution(%a, %b), metadata={op_name="jit(f)/UNet2DConditionModel/conv_in/conv_general_dilated"}
  %fusion.7 = (f32[4,4]{1,0}, f32[4]{0}) fusion(%c), kind=kLoop, metadata={op_name="jit(f)/UNet2DConditionModel/down_blocks_0/attentions_0/transformer_blocks_0/attn1/vmap()/exp"}
  %dot.2 = f32[4,4]{1,0} dot(%c, %d), metadata={op_name="jit(f)/UNet2DConditionModel/down_blocks_0/attentions_0/transformer_blocks_0/attn1/to_q/dot_general"}
  %while.1 = (s32[], f32[4,4]{1,0}) while(%t), condition=%cond, body=%body
  ROOT %copy.5 = f32[4,4]{1,0} copy(%p)
}
"""


def test_instructions_and_aten_ops_fall_into_the_same_kinds():
  names = op_profile.op_names(HLO)
  # Without metadata: in a loop body, the name of the instruction before; in ENTRY, none.
  assert names["while.1"] is None and names["copy.5"] == ""
  assert names["fusion.11"] == names["dot.9"]
  kinds = {name: op_profile.our_kind(op) for name, op in names.items() if op is not None}
  assert kinds == {"convolution.3": "convolution", "fusion.7": "attention",
                   "dot.2": "other matmul", "copy.5": "other", "dot.9": "attention",
                   "fusion.11": "attention"}
  assert op_profile.our_kind("jit(f)/UNet2DConditionModel/mid_block/resnets_0/norm1/"
                             "reduce_sum") == "normalisation"
  assert {op: op_profile.reference_kind(op) for op in (
      "aten::mkldnn_convolution", "aten::_scaled_dot_product_flash_attention_for_cpu",
      "aten::native_group_norm", "aten::addmm", "aten::add")} == {
      "aten::mkldnn_convolution": "convolution",
      "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
      "aten::native_group_norm": "normalisation", "aten::addmm": "other matmul",
      "aten::add": "other"}


def test_a_profiled_program_is_split_by_kind():
  def program(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO",
                                                                               "NHWC"))
    z = jax.lax.fori_loop(0, 4, lambda _, m: jnp.tanh(m @ m), y[0, :, :, 0])
    return y.sum() + z.sum()

  x, w = jnp.ones((1, 64, 64, 8)), jnp.ones((3, 3, 8, 8)) / 72
  compiled = jax.jit(program).lower(x, w).compile()
  totals = op_profile.profile_ours(lambda: compiled(x, w), compiled.as_text(), repeats=2)
  assert totals["convolution"] > 0 and totals["other matmul"] > 0
  assert set(totals) <= set(op_profile.KINDS)


def test_the_script_splits_both_sides_into_every_kind():
  """The whole script at a toy size: both sides profiled, one JSON object."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "op_profile.py"),
                         "--width", "0.1", "--size", "64", "--threads", "1", "--repeats", "1"],
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout)
  for side in ("ours", "reference"):
    assert set(result[side]) == set(op_profile.KINDS) | {"total_ms", "wall_ms_unprofiled"}
    assert result[side]["total_ms"] > 0 and result[side]["convolution"]["ms"] > 0
  assert set(result["ratio_ours_over_reference"]) == set(op_profile.KINDS) | {"total"}

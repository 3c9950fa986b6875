"""Matmul and convolution FLOPs of a compiled XLA program, read from its optimized HLO.

Why not `compiled.cost_analysis()["flops"]`: it adds elementwise work (one FLOP per
element of every add, exp, compare...), which PyTorch's `FlopCounterMode` does not
count, and it counts the body of a `while` loop once whatever its trip count (a
`lax.scan` of 5 matmuls reports one). This walks every computation reachable from the
entry (fusions, calls, while bodies times their known trip count, conditional branches)
and counts only `dot` and `convolution`, as 2 x multiply-adds, in the convention of
`FlopCounterMode`: a convolution costs 2 * output elements * window elements * input
features per group, taps over padding included, divided by the input's dilation (the
input gradient of a stride-2 convolution is a convolution over a 2x-dilated input
whose taps on the holes multiply zeros). So a forward convolution, its input gradient
and its weight gradient each cost the same, on both sides.

Each count keeps JAX's name stack (`op_name` metadata: `jvp(...)` is a forward pass,
`transpose(jvp(...))` a backward one, Flax adds module paths), which XLA keeps on most
ops; those it drops are counted with an empty name.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable

_SHAPE = re.compile(r"^[a-z]\w*\[([\d,]*)\]")
_CALLEES = re.compile(r"\b(calls|to_apply|body|condition|true_computation|false_computation|"
                      r"branch_computations)=(\{[^}]*\}|%?[\w.\-]+)")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*(\(.*\))?\s*->.*\{\s*$")
_OP_NAME = re.compile(r'op_name="((?:[^"\\]|\\.)*)"')


@dataclasses.dataclass(frozen=True)
class MatmulOp:
  kind: str       # "dot" or "convolution"
  flops: float    # 2 x multiply-adds, times how often the op runs per call of the program
  op_name: str    # JAX's name stack for the op ("" where XLA dropped it)


@dataclasses.dataclass
class _Instruction:
  name: str
  type: str
  opcode: str
  operands: list[str]
  attrs: str


def _group_end(text: str, start: int) -> int:
  """Index just past the bracket group opening at text[start] (quoted strings skipped)."""
  closing = {"(": ")", "{": "}", "[": "]"}
  stack, i = [], start
  while i < len(text):
    c = text[i]
    if c == '"':
      i += 1
      while text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    elif c in closing:
      stack.append(closing[c])
    elif stack and c == stack[-1]:
      stack.pop()
      if not stack:
        return i + 1
    i += 1
  raise ValueError(f"unbalanced HLO text: {text[start:start + 80]!r}")


def _split_top(text: str) -> list[str]:
  """Comma-separated items of `text`, ignoring commas inside brackets."""
  items, depth, current = [], 0, []
  for c in text:
    if c in "([{":
      depth += 1
    elif c in ")]}":
      depth -= 1
    if c == "," and depth == 0:
      items.append("".join(current).strip())
      current = []
    else:
      current.append(c)
  if "".join(current).strip():
    items.append("".join(current).strip())
  return items


def _parse_instruction(line: str) -> _Instruction | None:
  line = line.strip()
  if line.startswith("ROOT "):
    line = line[5:]
  if " = " not in line:
    return None
  name, rest = line.split(" = ", 1)
  if rest.startswith("("):  # a tuple type
    end = _group_end(rest, 0)
  else:
    end = rest.index(" ")
  type_, rest = rest[:end], rest[end:].lstrip()
  paren = rest.find("(")
  if paren < 0:
    return None
  opcode = rest[:paren]
  close = _group_end(rest, paren)
  operands = _split_top(rest[paren + 1:close - 1])
  return _Instruction(name.lstrip("%"), type_, opcode, operands, rest[close:])


def _parse(hlo: str) -> tuple[dict[str, list[_Instruction]], str]:
  """{computation name: instructions}, and the entry computation's name."""
  computations: dict[str, list[_Instruction]] = {}
  entry, current = "", None
  for line in hlo.splitlines():
    match = _COMPUTATION.match(line.strip())
    if match and current is None:
      current = match.group(2)
      computations[current] = []
      if match.group(1):
        entry = current
      continue
    if line.strip() == "}":
      current = None
      continue
    if current is not None:
      inst = _parse_instruction(line)
      if inst is not None:
        computations[current].append(inst)
  if not entry:
    raise ValueError("no ENTRY computation in the HLO text")
  return computations, entry


def _dims(type_: str) -> list[int]:
  match = _SHAPE.match(type_)
  if not match:
    raise ValueError(f"not an array type: {type_!r}")
  return [int(d) for d in match.group(1).split(",") if d]


def _attr(attrs: str, key: str) -> str | None:
  match = re.search(rf"\b{key}=(\{{[^}}]*\}}|[^,\s]+)", attrs)
  return match.group(1) if match else None


def _operand_type(operand: str, types: dict[str, str]) -> str:
  """An operand printed as `%name` (its type from the computation) or `f32[..] %name`."""
  parts = operand.split()
  if len(parts) > 1:
    return parts[0]
  return types[parts[0].lstrip("%")]


def _flops(inst: _Instruction, types: dict[str, str]) -> float:
  out = math.prod(_dims(inst.type))
  lhs = _dims(_operand_type(inst.operands[0], types))
  if inst.opcode == "dot":
    contracting = _attr(inst.attrs, "lhs_contracting_dims") or "{}"
    dims = [int(d) for d in contracting.strip("{}").split(",") if d]
    return 2.0 * out * math.prod(lhs[d] for d in dims)
  window = _attr(inst.attrs, "window") or "{}"
  size = re.search(r"size=([\dx]+)", window)
  taps = math.prod(int(s) for s in size.group(1).split("x")) if size else 1
  dilation = re.search(r"lhs_dilate=([\dx]+)", window)
  holes = math.prod(int(s) for s in dilation.group(1).split("x")) if dilation else 1
  labels = _attr(inst.attrs, "dim_labels")
  feature = lhs[labels.split("_")[0].index("f")]
  groups = int(_attr(inst.attrs, "feature_group_count") or 1)
  return 2.0 * out * taps * feature / groups / holes


def _trip_count(inst: _Instruction) -> int:
  match = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', inst.attrs)
  if not match:
    raise ValueError(f"while loop {inst.name} has no known trip count: its FLOPs are "
                     "data-dependent")
  return int(match.group(1))


def matmul_ops(hlo: str) -> list[MatmulOp]:
  """Every dot and convolution the program runs per call, with its FLOPs (see the module
  docstring). Conditional branches count as the most expensive branch (an upper bound),
  a `while` without a known trip count is a ValueError."""
  computations, entry = _parse(hlo)
  memo: dict[str, list[MatmulOp]] = {}

  def walk(name: str) -> list[MatmulOp]:
    if name in memo:
      return memo[name]
    instructions = computations[name]
    types = {i.name: i.type for i in instructions}
    ops: list[MatmulOp] = []
    for inst in instructions:
      if inst.opcode in ("dot", "convolution"):
        op_name = _OP_NAME.search(inst.attrs)
        ops.append(MatmulOp(inst.opcode, _flops(inst, types),
                            op_name.group(1) if op_name else ""))
      callees = {key: [c.strip().lstrip("%") for c in value.strip("{}").split(",") if c.strip()]
                 for key, value in _CALLEES.findall(inst.attrs)}
      if inst.opcode == "while":
        trips = _trip_count(inst)
        ops += [dataclasses.replace(op, flops=op.flops * trips) for op in walk(callees["body"][0])]
      elif inst.opcode == "conditional":
        branches = (callees.get("branch_computations") or
                    callees.get("true_computation", []) + callees.get("false_computation", []))
        ops += max((walk(b) for b in branches), key=lambda o: sum(x.flops for x in o))
      elif inst.opcode in ("fusion", "call", "async-start"):
        for callee in callees.get("calls", []) + callees.get("to_apply", []):
          ops += walk(callee)
    memo[name] = ops
    return ops

  return walk(entry)


def total(ops: Iterable[MatmulOp]) -> float:
  return float(sum(op.flops for op in ops))


def cost_analysis_flops(compiled) -> float:
  """XLA's own count (elementwise work included, while bodies counted once), for contrast."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")

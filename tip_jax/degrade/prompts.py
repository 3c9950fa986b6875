"""The restoration-prompt language of TIP's parameterised pipeline (paper, Tab. 2).

A prompt lists the applied stages in pipeline order, each with its value or by type:

    "Deblur with sigma 2.9; Upsample to 4.0x; Denoise with sigma 0.12; Dejpeg with quality 40;"
    "Deblur; Denoise;"

Values are printed at a fixed precision (blur sigma 0.1 px, upsampling factor 0.1,
noise sigma 0.01, JPEG quality 1) and the sampler draws them on that grid, so a prompt
states exactly what was applied and parsing it gives the same numbers back.
"""

from __future__ import annotations

import dataclasses
import math
import re

from absl import logging

from tip_jax.errors import PromptError

BLIND_PROMPT = "Remove all degradation"


def is_blind(text: str) -> bool:
  """Whether `text` is the blind prompt, in any case, with or without a final ";" or "."."""
  return " ".join(text.split()).lower().rstrip(" ;.") == BLIND_PROMPT.lower()


@dataclasses.dataclass(frozen=True)
class Clause:
  """One stage's wording: `Verb with <noun> <value><unit>`, and the values that make
  physical sense for it (what any prompt may say; training covers a smaller range)."""

  field: str       # the Stage field it sets
  verb: str
  link: str        # text between the verb and the value
  unit: str
  decimals: int
  low: float       # physical limits: low < value (low_open) or low <= value, value <= high
  high: float
  low_open: bool = False

  def physical(self, value: float) -> bool:
    above = value > self.low if self.low_open else value >= self.low
    return above and value <= self.high and math.isfinite(value)

  def limits(self) -> str:
    bound = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
    return bound if math.isinf(self.high) else f"in [{self.low:g}, {self.high:g}]"

  def render(self, value: float | None) -> str:
    if value is None:
      return self.verb
    return f"{self.verb} {self.link} {value:.{self.decimals}f}{self.unit}"


CLAUSES = (
    Clause("blur_sigma", "Deblur", "with sigma", "", 1, 0.0, math.inf, low_open=True),
    Clause("downsample", "Upsample", "to", "x", 1, 1.0, math.inf),
    Clause("noise_sigma", "Denoise", "with sigma", "", 2, 0.0, math.inf),
    Clause("jpeg_quality", "Dejpeg", "with quality", "", 0, 1.0, 100.0),
)
_BY_VERB = {c.verb.lower(): c for c in CLAUSES}
_BY_FIELD = {c.field: c for c in CLAUSES}
_NUMBER = r"([+-]?(?:\d+\.?\d*|\.\d+))"


@dataclasses.dataclass(frozen=True)
class Stages:
  """Host-side description of one parameterised degradation; None = stage not applied."""

  blur_sigma: float | None = None     # Gaussian blur sigma, pixels
  downsample: float | None = None     # downsampling factor >= 1 ("Upsample to 4.0x")
  noise_sigma: float | None = None    # Gaussian noise sigma, [0, 1] image units
  jpeg_quality: float | None = None   # JPEG quality, 0..100
  with_values: bool = True            # prompt names values, or types only

  def prompt(self, with_values: bool | None = None) -> str:
    values = self.with_values if with_values is None else with_values
    parts = [c.render(getattr(self, c.field) if values else None)
             for c in CLAUSES if getattr(self, c.field) is not None]
    return "".join(f"{p}; " for p in parts).strip()


def quantize(field: str, value: float) -> float:
  """The value as its prompt prints it."""
  return round(float(value), _BY_FIELD[field].decimals)


def _parse_clause(text: str) -> tuple[Clause, float | None]:
  words = text.split(None, 1)
  clause = _BY_VERB.get(words[0].lower()) if words else None
  if clause is None:
    known = ", ".join(c.verb for c in CLAUSES)
    raise PromptError(f"unknown clause {text!r}: expected one of {known} (or "
                      f"{BLIND_PROMPT!r} alone)")
  rest = words[1].strip() if len(words) > 1 else ""
  if not rest:
    return clause, None
  link = r"\s+".join(map(re.escape, clause.link.split()))
  unit = re.escape(clause.unit) + "?" if clause.unit else ""
  match = re.fullmatch(rf"(?:{link}\s*)?{_NUMBER}\s*{unit}", rest, flags=re.IGNORECASE)
  if match is None:
    raise PromptError(f"cannot read clause {text!r}: expected "
                      f"{clause.render(1.0)!r}-style wording")
  return clause, float(match.group(1))


def parse(text: str, ranges: dict[str, tuple[float, float]] | None = None,
          defaults: dict[str, float] | None = None, beyond_range: str = "error") -> Stages:
  """Reads a prompt; case, spacing, clause order and the final ';' are free.

  An empty prompt is the identity (the sampler's "no stage applied" case, c_r = ∅).
  Stages always apply in pipeline order (blur, downsample, noise, JPEG), whatever
  order the text lists them in; `Stages.prompt()` writes the canonical order.

  A value outside its clause's physical limits (`Clause.low`/`high`) raises PromptError.
  ranges: {field: (low, high)}, the training ranges; a value outside them raises
    PromptError naming the clause (beyond_range="error": what a degradation pipeline
    cannot apply) or logs one warning naming the range and is kept ("warn": a model
    may be asked for strengths it never saw, as the paper's prompt walks do).
  defaults: {field: value} applied for type-only clauses ("Deblur;"), which name a
    stage but no strength; the result then has with_values=False.
  """
  if beyond_range not in ("error", "warn"):
    raise ValueError(f"beyond_range={beyond_range!r}: expected 'error' or 'warn'")
  text = " ".join(text.split())
  if is_blind(text):
    raise PromptError(f"{BLIND_PROMPT!r} is the blind restoration prompt: it names no "
                      "specific degradation to apply")
  values: dict[str, float] = {}
  typed_only = []
  for part in (p.strip() for p in text.split(";")):
    if not part:
      continue
    clause, value = _parse_clause(part)
    if clause.field in values:
      raise PromptError(f"clause {part!r} repeats {clause.verb}")
    if value is None:
      if defaults is None or clause.field not in defaults:
        raise PromptError(f"clause {part!r} gives no value and no default is set")
      typed_only.append(clause.field)
      value = defaults[clause.field]
    if not clause.physical(value):
      raise PromptError(f"clause {part!r}: {clause.verb} needs a value {clause.limits()}")
    low, high = (ranges or {}).get(clause.field, (float("-inf"), float("inf")))
    if not low <= value <= high:
      message = f"clause {part!r}: {value:g} is outside [{low:g}, {high:g}]"
      if beyond_range == "error":
        raise PromptError(message)
      logging.warning("%s, the range the model was trained on; restoring anyway", message)
    values[clause.field] = value
  if typed_only and len(typed_only) != len(values):
    raise PromptError(f"prompt {text!r} mixes clauses with and without values")
  return Stages(**values, with_values=not typed_only)


def canonical(text: str, ranges: dict[str, tuple[float, float]] | None = None,
              defaults: dict[str, float] | None = None) -> tuple[str, Stages | None]:
  """What a model is given for a typed restoration prompt: the training form (clauses in
  pipeline order, values at the precision training printed them, "; " after each), and
  the stages it names (None for the blind prompt and for ""). Beyond `ranges` it warns
  (see `parse`). Every entry point sends prompts to CLIP through this one function, so
  "deblur with sigma 3" and "Deblur with sigma 3.0;" give the same tokens."""
  if is_blind(text):
    return BLIND_PROMPT, None
  if not text.strip():
    return "", None
  stages = parse(text, ranges, defaults, beyond_range="warn")
  return stages.prompt(), stages

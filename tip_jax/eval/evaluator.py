"""The evaluator job: follows a trainer's checkpoints and scores each one exactly once.

    tip-train --mode=eval --config configs/tip.py:tiny --workdir /tmp/tip_tiny

Same config file and workdir as the trainer; the config's `evals` block says which test
sets (`tip-make-benchmark` folders, or "embedded": built on demand from the photos that
ship with scikit-image), which prompt modes, sampler steps, guidance, batch and metrics.
For every new checkpoint (`experiment.checkpoint.checkpoints` polls the shared folder)
it restores the EMA params alone onto its own mesh, restores every set in every mode
with batched sampling, and writes
  - TensorBoard scalars `eval/<set>/<mode>/<metric>` (CLU, in the workdir),
  - `eval/step_<N>/results.{csv,md}` (one row per set and mode, plus the degraded
    input's own scores as mode "input"), and `eval/step_<N>/<set>_<mode>.png` grids,
  - the validation loss (the trainer's `loss_fn` on held-out batches), if configured.
What is done is recorded per (step, set, mode) in `eval/state.json`, replaced
atomically after each: a restarted evaluator (after SIGKILL, say) repeats nothing that
finished and loses nothing. A checkpoint that retention deletes before or while it is
read, or that cannot be read (a damaged file: the warning names it), is skipped with a
warning. The job ends after the final checkpoint once the trainer has written
`train_complete` (or after `evals.timeout_s` without news).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from tip_jax import __version__
from tip_jax.data.config import DataConfig
from tip_jax.errors import ConfigError
from tip_jax.eval import scoring, sets
from tip_jax.eval.modes import INPUT_MODE, Mode, modes
from tip_jax.experiment import checkpoint as ckpt_lib
from tip_jax.experiment import loss as loss_lib
from tip_jax.experiment import setup as setup_lib
from tip_jax.experiment import summaries
from tip_jax.image_io import labelled_grid, write_atomically, write_png
from tip_jax.metrics import fid as fid_lib
from tip_jax.restore import TIPRestorer

class State:
  """What is finished, in `workdir/eval/state.json`, written atomically after each part.

  results[step][f"{set}/{mode}"] = {metric: {"mean", "count"}}; complete = steps whose
  every part is done (and tables written); skipped = steps deleted before they were read.
  """

  def __init__(self, path: str):
    self.path = path
    data = json.loads(epath.Path(path).read_text()) if os.path.exists(path) else {}
    self.results: dict[str, dict[str, dict]] = data.get("results", {})
    self.inputs: dict[str, dict] = data.get("inputs", {})
    self.complete: list[int] = data.get("complete", [])
    self.skipped: list[int] = data.get("skipped", [])

  def last(self) -> int | None:
    finished = self.complete + self.skipped
    return max(finished) if finished else None

  def save(self) -> None:
    """Replaces the file (process 0 only: every process holds the same state)."""
    if jax.process_index() != 0:
      return
    text = json.dumps({"version": __version__, "results": self.results, "inputs": self.inputs,
                       "complete": sorted(self.complete), "skipped": sorted(self.skipped)},
                      indent=1)
    write_atomically(self.path, lambda f: f.write(text.encode("utf-8")))


def open_sets(config: ml_collections.ConfigDict, workdir: str) -> list[sets.EvalSet]:
  """The configured sets: "embedded" (built under `workdir/eval/sets` when missing) or
  folders written by `tip-make-benchmark`."""
  evals, out = config.evals, []
  for name in evals.sets:
    if name == "embedded":
      out += sets.ensure_embedded(os.path.join(workdir, "eval", "sets"),
                                  size=int(evals.embedded_size or config.data.resolution),
                                  count=int(evals.embedded_count), seed=int(evals.seed))
    else:
      out.append(sets.EvalSet.open(name))
  if not out:
    raise ConfigError("evals.sets is empty: name test sets to evaluate")
  return out


class _Validation:
  """The trainer's loss on fixed held-out batches (same noise for every checkpoint)."""

  def __init__(self, exp: setup_lib.Experiment, evals: ml_collections.ConfigDict):
    data = DataConfig(**{**exp.config.data.to_dict(), "source": evals.val_source,
                         "shuffle": False, "flip": False, "semantic_dropout": 0.0,
                         "num_workers": 0})
    it = exp.data_iterator(data, seed=int(evals.seed))
    self.batches = [exp.global_batch(loss_lib.host_batch(next(it))[0])
                    for _ in range(int(evals.val_batches))]
    it.close()
    models, config = exp.components, exp.config
    blind_ids = loss_lib.blind_prompt_ids(models)

    @jax.jit
    def loss(params, frozen, batch):
      data = loss_lib.device_batch(batch, jnp.int32(0), seed=int(evals.seed),
                                   degrade_config=exp.degrade_config, mesh=exp.mesh,
                                   batch_axes=exp.batch_axes, blind_ids=blind_ids)
      return loss_lib.loss_fn(params, frozen, data, models=models,
                              schedule=models.backbone.schedule(), prompts=config.prompts,
                              timesteps=config.loss.timesteps,
                              weighting=config.loss.weighting)

    self._loss, self._frozen = loss, exp.frozen

  def __call__(self, params: Any) -> float:
    return float(np.mean([jax.device_get(self._loss(params, self._frozen, b))
                          for b in self.batches]))


class Evaluator:
  """Scores checkpoints of one workdir; `run()` is the job, `evaluate(step)` one step."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               devices: Sequence[jax.Device] | None = None):
    if jax.process_count() > 1:
      raise ConfigError(f"the evaluator runs as one process over its host's devices, not "
                        f"{jax.process_count()}: start it on a single-host machine")
    if config.task != "tip":
      raise ConfigError(f"task={config.task!r}: the evaluator scores TIP runs; a pretraining "
                        "run's metrics and sample grids are in its workdir")
    self.config, self.workdir, self.evals = config, workdir, config.evals
    self.folder = os.path.join(workdir, "eval")
    os.makedirs(self.folder, exist_ok=True)
    self.exp = setup_lib.setup(config, workdir, devices)
    self.modes = modes(self.evals)
    self.sets = open_sets(config, workdir)
    comps, use = self.exp.components, config.prompts
    self.restorer = TIPRestorer(comps.backbone.with_params(self.exp.frozen), comps.controlnet,
                                None, resolution=int(config.data.resolution),
                                degrade_config=self.exp.degrade_config,
                                uses_semantic=bool(use.semantic),
                                uses_restoration=bool(use.restoration))
    self.batch_sharding = jax.sharding.NamedSharding(
        self.exp.mesh, jax.sharding.PartitionSpec(self.exp.batch_axes))
    self.scorer = scoring.Scorer.load(
        self.evals.metrics, lpips_net=self.evals.lpips_net, inception=self.evals.inception,
        clip=self.evals.clip, crop_border=int(self.evals.crop_border),
        y_channel=bool(self.evals.y_channel), sharding=self.batch_sharding)
    self.state = State(os.path.join(self.folder, "state.json"))
    self.validation = (_Validation(self.exp, self.evals)
                       if self.evals.val_source and self.evals.val_batches else None)
    self.writer = summaries.SummaryWriter(workdir, write=jax.process_index() == 0)

  # ---- The job.
  def run(self) -> dict[int, dict]:
    """Evaluates every checkpoint not yet done, as they appear; returns what it scored."""
    done = {}
    for step in ckpt_lib.checkpoints(self.workdir, after_step=self.state.last(),
                                     poll_s=float(self.evals.poll_s),
                                     timeout_s=float(self.evals.timeout_s) or None):
      if step in self.state.complete or step in self.state.skipped:
        continue
      results = self.evaluate(step)
      if results is not None:
        done[step] = results
    self.writer.flush()
    logging.info("evaluator done: %d checkpoint(s) scored in this run, results in %s",
                 len(done), self.folder)
    return done

  def evaluate(self, step: int) -> dict[str, dict] | None:
    """Every (set, mode) of `step` not yet in the state; None if the step vanished."""
    self._score_inputs()
    params = self._params(step)
    if params is None:
      self.state.skipped.append(step)
      self.state.save()
      return None
    restorer = self.restorer.with_params(params)
    results = self.state.results.setdefault(str(step), {})
    for eval_set in self.sets:
      for mode in self.modes:
        key = f"{eval_set.name}/{mode.name}"
        if key in results:
          continue
        logging.info("step %d: %s (%d images)", step, key, len(eval_set))
        results[key] = self._score(restorer, eval_set, mode, step)
        self.writer.write_scalars(step, _scalars(key, results[key]))
        self.state.save()
    if self.validation is not None and "validation" not in results:
      results["validation"] = {"loss": {"mean": self.validation(params),
                                        "count": int(self.evals.val_batches)}}
      self.writer.write_scalars(step, {"eval/validation/loss":
                                       results["validation"]["loss"]["mean"]})
    self._tables(step, results)
    self.state.complete.append(step)
    self.state.save()
    self.writer.flush()
    return results

  # ---- Pieces.
  def _params(self, step: int) -> Any:
    """The EMA params of `step`; None (warned) when it was deleted or cannot be read."""
    mngr = ckpt_lib.manager(self.workdir, read_only=True)
    shardings = jax.tree.map(
        lambda _: jax.sharding.NamedSharding(self.exp.mesh, jax.sharding.PartitionSpec()),
        self.exp.state_shardings.ema_params)
    try:
      found = ckpt_lib.read_newest(
          mngr, lambda s: ckpt_lib.load_params(mngr, s, self.exp.components.controlnet,
                                               "ema_params", shardings),
          [step], ("ema_params",), fall_back=True)
    finally:
      mngr.close()
    return None if found is None else found[1]

  def _batches(self, eval_set: sets.EvalSet) -> Iterator[sets.Batch]:
    return eval_set.batches(int(self.evals.batch_size))

  def _ref_stats(self, eval_set: sets.EvalSet) -> fid_lib.Stats | None:
    """Inception statistics of the set's ground truth, computed once and cached."""
    if "fid" not in self.scorer.metrics:
      return None
    path = os.path.join(self.folder, "ref_stats", f"{eval_set.name}_{eval_set.meta['content_sha256'][:12]}.npz")
    if os.path.exists(path):
      return fid_lib.load_stats(path)
    features = fid_lib.FeatureStats()
    for batch in self._batches(eval_set):
      features.add(self.scorer.features(batch.gt))
    stats = features.stats()
    fid_lib.save_stats(path, stats)
    return stats

  def _score_inputs(self) -> None:
    """The degraded inputs' own scores per set (checkpoint-independent), once."""
    for eval_set in self.sets:
      if eval_set.name in self.state.inputs:
        continue
      tally = scoring.Tally(self.scorer)
      for batch in self._batches(eval_set):
        tally.add(batch.inputs, batch.gt, batch.captions, ref_features=False)
      self.state.inputs[eval_set.name] = tally.result(self._ref_stats(eval_set))
      self.state.save()

  def _score(self, restorer: TIPRestorer, eval_set: sets.EvalSet, mode: Mode,
             step: int) -> dict[str, dict]:
    tally, shown = scoring.Tally(self.scorer), []
    size = int(self.evals.batch_size)
    total = -(-len(eval_set) // size)
    options = {"steps": int(self.evals.steps), **mode.sampler_options}  # a mode's steps win
    for number, batch in enumerate(self._batches(eval_set), 1):
      semantic, restoration = mode.prompts(batch)
      n = len(batch.ids)
      # A short last batch is padded to the full size: one compiled program per set.
      fill = lambda xs: list(xs) + [xs[-1]] * (size - n)  # noqa: E731
      restored = restorer.restore_batch(
          np.concatenate([batch.inputs, np.repeat(batch.inputs[-1:], size - n, 0)]),
          fill(semantic), fill(restoration),
          guidance=float(self.evals.guidance), seed=fill([self._seed(i) for i in batch.ids]),
          upsample=False, batch_sharding=self.batch_sharding, **options)[:n]
      tally.add(restored, batch.gt, batch.captions, ref_features=False)
      for i in range(min(n, int(self.evals.num_grid) - len(shown))):
        shown.append((batch.inputs[i], restored[i], batch.gt[i], semantic[i], restoration[i]))
      if number % max(1, total // 10) == 0 and number < total:
        logging.info("step %d: %s/%s: %d of %d batches", step, eval_set.name, mode.name,
                     number, total)
    if shown and jax.process_index() == 0:
      self._grid(step, eval_set.name, mode.name, shown)
    return tally.result(self._ref_stats(eval_set))

  def _seed(self, example_id: str) -> int:
    """Each example's sampling seed from the config seed and its id alone: the same noise
    in every mode and checkpoint, whatever the batch."""
    return (int(self.evals.seed) * 1_000_003 + _stable_hash(example_id)) % 2**31

  def _grid(self, step: int, set_name: str, mode: str, shown: list) -> None:
    tiles, labels = [], []
    for degraded, restored, gt, semantic, restoration in shown:
      tiles += [degraded / 255, restored / 255, gt / 255]
      labels += [f"c_r: {restoration or '(none)'}", f"c_s: {semantic or '(none)'}", "clean"]
    grid = np.asarray(labelled_grid(tiles, labels, columns=3))
    write_png(grid, os.path.join(self.folder, f"step_{step:07d}", f"{set_name}_{mode}.png"))
    self.writer.write_images(step, {f"eval/{set_name}/{mode}": grid[None]})

  def _tables(self, step: int, results: dict[str, dict]) -> None:
    if jax.process_index() != 0:
      return
    rows = []
    for eval_set in self.sets:
      rows.append((eval_set.name, INPUT_MODE, self.state.inputs[eval_set.name]))
      rows += [(eval_set.name, m.name, results[f"{eval_set.name}/{m.name}"]) for m in self.modes]
    folder = os.path.join(self.folder, f"step_{step:07d}")
    write_tables(rows, folder, title=f"step {step}")
    if "validation" in results:
      logging.info("step %d: validation loss %.5f", step, results["validation"]["loss"]["mean"])
    logging.info("step %d: results in %s", step, os.path.join(folder, "results.md"))


def _scalars(key: str, result: dict[str, dict]) -> dict[str, float]:
  return {f"eval/{key}/{metric}": v["mean"] for metric, v in result.items()}


def _stable_hash(text: str) -> int:
  """A hash of `text` that is the same in every process and run (unlike `hash`)."""
  value = 0
  for byte in text.encode("utf-8"):
    value = (value * 131 + byte) % 2**31
  return value


def write_tables(rows: Sequence[tuple[str, str, dict[str, dict]]], folder: str,
                 title: str) -> None:
  """`results.csv` and `results.md` in `folder`: one row per (set, mode), a column per
  metric (its mean), and the image count."""
  metrics = [m for m in scoring.METRICS if any(m in r for _, _, r in rows)]
  os.makedirs(folder, exist_ok=True)
  count = lambda r: max((v["count"] for v in r.values()), default=0)  # noqa: E731
  with open(os.path.join(folder, "results.csv"), "w", newline="", encoding="utf-8") as f:
    out = csv.writer(f)
    out.writerow(["set", "mode", *metrics, "images"])
    for set_name, mode, r in rows:
      out.writerow([set_name, mode, *[repr(r[m]["mean"]) if m in r else "" for m in metrics],
                    count(r)])
  lines = [f"# {title}", "", "| set | mode | " + " | ".join(metrics) + " | images |",
           "|---|---|" + "---:|" * (len(metrics) + 1)]
  for set_name, mode, r in rows:
    cells = [_fmt(m, r[m]["mean"]) if m in r else "" for m in metrics]
    lines.append(f"| {set_name} | {mode} | " + " | ".join(cells) + f" | {count(r)} |")
  with open(os.path.join(folder, "results.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _fmt(metric: str, value: float) -> str:
  return f"{value:.2f}" if metric in ("psnr", "fid") else f"{value:.4f}"


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             devices: Sequence[jax.Device] | None = None) -> dict[int, dict]:
  """The evaluator job (see the module docstring)."""
  return Evaluator(config, workdir, devices).run()

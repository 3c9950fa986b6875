"""The Grain pipeline: schema, determinism, Orbax resume, process shards, bad files, workers."""

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tests.fixtures.data import bad_files, encode, photo, write_shard

from tip_jax import degrade
from tip_jax.data import images, pipeline
from tip_jax.data.config import DataConfig
from tip_jax.data.pipeline import make_iterator
from tip_jax.errors import ConfigError, DataError
from tip_jax.models.tokenizer import bundled_tokenizer, tokenize

RES = 16


@pytest.fixture(scope="module")
def tokenizer():
  return bundled_tokenizer()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """Ten good records: an ArrayRecord spec."""
  path = tmp_path_factory.mktemp("photos") / "photos-00000-of-00001.array_record"
  write_shard(path, [(f"p{i}", encode(photo(20 + i, 30, i), "PNG"), None) for i in range(10)])
  return f"arrayrecord:{path}"


def _iterator(tokenizer, source, batch_size=4, seed=0, process_index=0, process_count=1,
              **overrides):
  config = DataConfig(**{**dict(source=source, resolution=RES, num_workers=0), **overrides})
  return make_iterator(config, batch_size=batch_size, seed=seed, tokenizer=tokenizer,
                       degrade_config=degrade.DegradeConfig(size=(RES, RES)),
                       process_index=process_index, process_count=process_count)


def _kept(event) -> bool:
  return event is None or not event.startswith("skipped")


def _same(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_batch_schema_and_params(tokenizer, photos):
  batch = next(_iterator(tokenizer, photos, semantic_dropout=0.0))
  assert batch["image"].shape == (4, RES, RES, 3) and batch["image"].dtype == np.uint8
  for kind in ("semantic", "restoration"):
    ids = batch[f"{kind}_ids"]
    assert ids.shape == (4, 77) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, tokenize(tokenizer, list(batch[f"{kind}_prompt"])))
  assert batch["index"].dtype == np.int64
  assert set(batch["stats"]) == set(images.EVENTS)
  assert all(v.shape == (4,) and v.dtype == np.int32 for v in batch["stats"].values())
  for index, prompt in zip(batch["index"], batch["semantic_prompt"]):
    assert prompt in (f"p{index} caption 0", f"p{index} caption 1")
  # First epoch: each example's parameters are sample_params(seed, ., indices=[record index]).
  params = degrade.params_from_tree(batch["degrade"], degrade.DegradeConfig(size=(RES, RES)))
  expected, prompts = degrade.sample_params(0, 4, degrade.DegradeConfig(size=(RES, RES)),
                                            indices=batch["index"])
  assert _same(params, expected) and list(batch["restoration_prompt"]) == prompts
  doubled = jax.jit(lambda d: degrade.params_from_tree(d, params.config).tip.blur_sigma * 2)(
      batch["degrade"])
  np.testing.assert_allclose(doubled, 2 * expected.tip.blur_sigma)


def test_same_seed_same_batches_and_dropout(tokenizer, photos):
  a, b = _iterator(tokenizer, photos), _iterator(tokenizer, photos)
  first = [next(a) for _ in range(4)]                    # 16 examples: into the 2nd epoch
  assert all(_same(x, next(b)) for x in first)
  other = next(_iterator(tokenizer, photos, seed=1))
  assert not np.array_equal(other["index"], first[0]["index"])
  # The second epoch is reshuffled and re-augmented.
  order = np.concatenate([x["index"] for x in first])
  seeds = np.concatenate([x["degrade"]["noise_seed"] for x in first])
  assert sorted(order[:10]) == list(range(10)) and list(order[10:]) != list(order[:6])
  for i in range(10, 16):
    assert seeds[i] != seeds[list(order[:10]).index(order[i])]
  dropped = next(_iterator(tokenizer, photos, semantic_dropout=1.0))
  assert list(dropped["semantic_prompt"]) == [""] * 4


def test_channel_shuffle_permutes_colours_and_nothing_else(tokenizer, photos):
  plain = next(_iterator(tokenizer, photos))
  shuffled = next(_iterator(tokenizer, photos, channel_shuffle=1.0))
  for key in ("index", "semantic_prompt", "restoration_prompt", "degrade"):
    assert _same(plain[key], shuffled[key])
  orders = set()
  for a, b in zip(plain["image"], shuffled["image"]):
    found = [p for p in pipeline._CHANNEL_ORDERS if np.array_equal(a[..., p], b)]
    assert found, "not a channel permutation of the unshuffled crop"
    orders.add(found[0])
    assert not np.array_equal(a, b)      # the fixture's photos have three distinct channels
  assert len(orders) > 1


def test_orbax_checkpoint_restores_the_stream(tokenizer, photos, tmp_path):
  run = _iterator(tokenizer, photos)
  uninterrupted = [next(run) for _ in range(5)]

  it = _iterator(tokenizer, photos)
  for _ in range(2):
    next(it)
  mngr = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",))
  mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  next(it)                                                # moves on after the save

  fresh = _iterator(tokenizer, photos)
  mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert all(_same(fresh_batch, want) for fresh_batch, want in
             zip((next(fresh) for _ in range(3)), uninterrupted[2:]))


def test_two_processes_get_disjoint_shards_that_cover_the_data(tokenizer, photos):
  seen = []
  for index in range(2):
    it = _iterator(tokenizer, photos, batch_size=5, process_index=index, process_count=2)
    seen.append(set(next(it)["index"].tolist()))
  assert len(seen[0]) == len(seen[1]) == 5
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(10))


def test_bad_files_are_fixed_or_skipped_and_counted(tokenizer, tmp_path):
  files = bad_files()
  path = tmp_path / "bad.array_record"
  write_shard(path, files)
  good = sum(1 for _, _, event in files if _kept(event))
  it = _iterator(tokenizer, f"arrayrecord:{path}", batch_size=1, shuffle=False, flip=False,
                 max_pixels=10_000)
  batches = [next(it) for _ in range(good)]
  totals = {name: sum(int(b["stats"][name].sum()) for b in batches) for name in images.EVENTS}
  expected = {name: sum(1 for _, _, event in files if event == name) for name in images.EVENTS}
  assert totals == expected
  assert [int(b["index"][0]) for b in batches] == [
      i for i, (_, _, event) in enumerate(files) if _kept(event)]
  by_name = {files[int(b["index"][0])][0]: b["image"][0] for b in batches}
  assert (by_name["gray16.png"] == 128).all()              # scaled from 16 bits, not clipped
  assert (by_name["rgba.png"] == 255).all()                # transparent -> white
  assert next(it)["index"][0] == 0                         # and the next epoch starts over


def test_huge_jpeg_decodes_at_a_draft_scale():
  data = encode(photo(600, 800, 1), "JPEG")
  crop, events = images.crop(data, 64, np.array([0.5, 0.5, 0.5]), max_pixels=100_000)
  assert crop.shape == (64, 64, 3) and events == {images.DOWNSCALED_HUGE}
  with pytest.raises(images.BadData, match="skipped_huge"):
    images.crop(encode(photo(600, 800, 1), "PNG"), 64, np.zeros(3), max_pixels=100_000)


def test_config_errors_name_the_problem(tokenizer, photos, tmp_path, monkeypatch):
  with pytest.raises(DataError, match="no ArrayRecord files match"):
    _iterator(tokenizer, f"arrayrecord:{tmp_path}/none-*.array_record")
  with pytest.raises(DataError, match="expected 'demo"):
    _iterator(tokenizer, "webdataset:/x")
  with pytest.raises(ConfigError, match="degrade_config.size"):
    make_iterator(DataConfig(source=photos, resolution=32), batch_size=2, seed=0,
                  degrade_config=degrade.DegradeConfig(size=(16, 16)), tokenizer=tokenizer)
  all_bad = tmp_path / "all-bad.array_record"
  write_shard(all_bad, [("notes.txt", b"not an image", None)] * 3)
  monkeypatch.setattr(pipeline, "_MAX_CONSECUTIVE_SKIPS", 50)
  with pytest.raises(DataError, match="in a row were unusable"):
    next(_iterator(tokenizer, f"arrayrecord:{all_bad}"))


def _spawned_children_niceness() -> list[int]:
  """The niceness of this process's multiprocessing children (Grain's workers)."""
  out = []
  for task in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{task}/children") as f:
      for pid in f.read().split():
        with open(f"/proc/{pid}/cmdline", "rb") as g:
          if b"multiprocessing.spawn" not in g.read():
            continue
        with open(f"/proc/{pid}/stat") as g:
          out.append(int(g.read().rsplit(")", 1)[1].split()[16]))  # field 19: nice
  return out


def test_demo_source_with_workers_restores_exactly(tokenizer):
  """Two `mp_prefetch` workers: the state after batch 2 resumes batches 3-4 exactly.
  They run at `worker_nice` above this process (the step keeps the CPU it needs)."""
  config = dict(max_zoom=4.0, num_workers=2, worker_nice=7)
  run = _iterator(tokenizer, "demo", **config)
  head = [next(run) for _ in range(2)]
  workers = _spawned_children_niceness()
  assert workers and set(workers) == {min(os.nice(0) + 7, 19)}
  state = run.get_state()
  tail = [next(run) for _ in range(2)]
  run.close()
  assert len({str(b["semantic_prompt"]) for b in head + tail}) > 1
  resumed = _iterator(tokenizer, "demo", **config)
  resumed.set_state(state)
  assert all(_same(next(resumed), want) for want in tail)
  resumed.close()
  in_process = _iterator(tokenizer, "demo", **dict(config, num_workers=0))
  assert next(in_process)["image"].shape == head[0]["image"].shape


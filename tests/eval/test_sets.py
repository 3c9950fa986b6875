"""Benchmark sets: built from a tiny fake COCO folder and the embedded photos, read back,
reproducible byte for byte, refused when the arguments change."""

import os
import re
import shutil

import jax
import numpy as np
import pytest
from tests.fixtures.data import encode, photo, write_coco_captions

from tip_jax.data import demo
from tip_jax.degrade import (BLIND_PROMPT, DegradeConfig, degrade, parse_restoration_prompt,
                             per_device, prompts)
from tip_jax.degrade.parameterized import TIPConfig
from tip_jax.errors import DataError
from tip_jax.eval import sets
from tip_jax.experiment import sharding
from tip_jax.image_io import read_rgb

SIZE, COUNT = 64, 4
GOOD = {f"{i:02d}.jpg": (70 + 9 * i, 64 + 13 * i) for i in range(6)}   # name: (h, w)
BAD = ("truncated.jpg", "notes.jpg", "missing.jpg")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco")
  folder = root / "val2017"
  folder.mkdir()
  for i, (name, (h, w)) in enumerate(GOOD.items()):
    (folder / name).write_bytes(encode(photo(h, w, i), "JPEG", quality=95))
  (folder / "truncated.jpg").write_bytes(encode(photo(80, 90, 9), "JPEG")[:300])
  (folder / "notes.jpg").write_bytes(b"not an image")
  names = ["truncated.jpg", *GOOD, "notes.jpg", "missing.jpg"]
  captions = root / "captions_val2017.json"
  write_coco_captions(captions, names, {n: [f"{n} caption {k}" for k in range(3)] for n in names})
  return str(folder), str(captions)


def _build(coco, out, **kw):
  images, captions = coco
  return sets.build("coco", str(out), size=SIZE, count=COUNT, seed=0, images=images,
                    captions=captions, **kw)


@pytest.fixture(scope="module")
def built(coco, tmp_path_factory):
  """Both COCO sets, degraded on 8 devices (one example each per call)."""
  out = tmp_path_factory.mktemp("sets")
  param, blind = _build(coco, out)
  return out, param, blind


def test_layout_shapes_and_index(built):
  out, param, blind = built
  assert sorted(os.listdir(out)) == ["coco_param_64", "coco_realesrgan_64"]
  assert (param.name, blind.name, param.size, len(param), len(blind)) == (
      "coco_param_64", "coco_realesrgan_64", SIZE, COUNT, COUNT)
  assert sorted(os.listdir(param.path)) == ["gt", "index.jsonl", "input", "set.json"]
  assert sorted(os.listdir(blind.path)) == ["gt", "index.jsonl", "input", "lq", "set.json"]
  for evalset in (param, blind):
    assert [r.id for r in evalset.records] == ["00000", "00001", "00002", "00003"]
    assert evalset.meta["tip_jax_version"] and len(evalset.meta["content_sha256"]) == 64
    for r in evalset.records:
      assert r.caption == f"{r.source} caption {r.caption[-1]}"
      assert read_rgb(os.path.join(evalset.path, r.gt)).shape == (SIZE, SIZE, 3)
      assert read_rgb(os.path.join(evalset.path, r.input)).shape == (SIZE, SIZE, 3)
  for r in blind.records:
    assert read_rgb(os.path.join(blind.path, r.lq)).shape == (SIZE // 4, SIZE // 4, 3)
    assert r.restoration_prompt == r.restoration_prompt_type_only == BLIND_PROMPT
    assert r.params is None
  # Both sets degrade the same ground truth, with the same captions.
  assert [r.caption for r in param.records] == [r.caption for r in blind.records]
  for a, b in zip(param.records, blind.records):
    assert open(os.path.join(param.path, a.gt), "rb").read() == open(
        os.path.join(blind.path, b.gt), "rb").read()


def test_corrupt_images_are_skipped_and_replaced(built):
  _, param, _ = built
  skipped = param.meta["skipped"]
  assert skipped and set(skipped) <= set(BAD)    # seed 0 draws at least one bad file
  assert len(param) == COUNT and not {r.source for r in param.records} & set(BAD)


def test_param_prompts_state_the_applied_parameters(built):
  _, param, _ = built
  config = TIPConfig()
  one_device = jax.jit(per_device(degrade, sharding.make_mesh({"data": 1}, jax.devices()[:1])))
  for r in param.records:
    stages = prompts.parse(r.restoration_prompt, config.ranges)
    assert {f: getattr(stages, f) for f in r.params if f != "noise_seed"} == {
        f: v for f, v in r.params.items() if f != "noise_seed"}
    assert not re.search(r"\d", r.restoration_prompt_type_only)
    typed = prompts.parse(r.restoration_prompt_type_only, config.ranges, config.defaults)
    fields = [c.field for c in prompts.CLAUSES]
    assert [getattr(typed, f) is None for f in fields] == [r.params[f] is None for f in fields]
    # The stored values and noise seed give back the stored input, on one device.
    gt = read_rgb(os.path.join(param.path, r.gt))
    params = parse_restoration_prompt(r.restoration_prompt, DegradeConfig(size=(SIZE, SIZE)))
    params = params.replace(noise_seed=np.array([r.params["noise_seed"]], np.uint32))
    y = np.asarray(one_device(gt[None].astype(np.float32) / 255, params))[0]
    np.testing.assert_array_equal(np.round(y * 255).astype(np.uint8),
                                  read_rgb(os.path.join(param.path, r.input)))


def test_same_seed_same_bytes_on_any_device_count(built, coco, tmp_path):
  _, param, blind = built
  again = _build(coco, tmp_path, devices=jax.devices()[:1])    # one example per call
  assert [s.meta["content_sha256"] for s in again] == [
      param.meta["content_sha256"], blind.meta["content_sha256"]]


def test_rebuild_is_a_no_op_and_other_arguments_are_refused(built, coco):
  out, param, _ = built
  before = {name: os.stat(os.path.join(param.path, name)).st_mtime_ns
            for name in ("set.json", "index.jsonl", "input/00000.png")}
  _build(coco, out)
  assert before == {name: os.stat(os.path.join(param.path, name)).st_mtime_ns for name in before}
  with pytest.raises(DataError, match=r"coco_param_64 was built with other arguments: count 4 "
                     r"\(now 5\)"):
    sets.build("coco", str(out), size=SIZE, count=5, images=coco[0], captions=coco[1])
  with pytest.raises(DataError, match=r"seed 0 \(now 3\)"):
    sets.build("coco", str(out), size=SIZE, count=COUNT, seed=3, images=coco[0],
               captions=coco[1])
  assert not [n for n in os.listdir(out) if n.startswith(".")]    # no partial folder left


def test_batches_yield_what_was_written(built):
  _, param, blind = built
  batches = list(blind.batches(3))
  assert [b.ids for b in batches] == [["00000", "00001", "00002"], ["00003"]]
  first = batches[0]
  assert first.gt.dtype == np.uint8 and first.gt.shape == (3, SIZE, SIZE, 3)
  assert first.lq.shape == (3, SIZE // 4, SIZE // 4, 3)
  for i, r in enumerate(blind.records[:3]):
    np.testing.assert_array_equal(first.inputs[i], read_rgb(os.path.join(blind.path, r.input)))
    np.testing.assert_array_equal(first.lq[i], read_rgb(os.path.join(blind.path, r.lq)))
    assert first.captions[i] == r.caption and first.restoration[i] == BLIND_PROMPT
  (tail,) = param.batches(8, start=2)
  assert tail.ids == ["00002", "00003"] and tail.lq is None
  assert tail.restoration == [r.restoration_prompt for r in param.records[2:]]
  assert tail.restoration_type_only == [r.restoration_prompt_type_only
                                        for r in param.records[2:]]


def test_damaged_sets_fail_naming_the_file(built, tmp_path):
  _, param, _ = built
  copy = tmp_path / "copy"
  shutil.copytree(param.path, copy)
  sets.EvalSet.open(str(copy), verify=True)
  os.remove(copy / "input" / "00001.png")
  damaged = sets.EvalSet.open(str(copy))
  with pytest.raises(DataError, match=r"input/00001.png: no such file"):
    list(damaged.batches(4))
  with pytest.raises(DataError, match=r"input/00001.png: cannot read it"):
    damaged.verify()
  with pytest.raises(DataError, match=r"set.json: no such file"):
    sets.EvalSet.open(str(tmp_path))


def test_embedded_sets_build_offline(tmp_path):
  param, blind = sets.ensure_embedded(str(tmp_path), count=8)
  assert (param.name, blind.name, len(param), len(blind)) == (
      "embedded_param_64", "embedded_realesrgan_64", 8, 8)
  photos = {name: captions for name, _, captions in demo.photos("heldout")}
  assert [r.source for r in param.records] == list(photos) * 2 + list(photos)[:2]
  assert all(r.caption in photos[r.source] for r in param.records)
  assert next(blind.batches(8)).lq.shape == (8, SIZE // 4, SIZE // 4, 3)
  assert [s.meta["content_sha256"] for s in sets.ensure_embedded(str(tmp_path), count=8)] == [
      param.meta["content_sha256"], blind.meta["content_sha256"]]
  # A validation split of the training photos: none of the held-out ones.
  train, _ = sets.ensure_embedded(str(tmp_path / "train"), count=3, split="train")
  assert [r.source for r in train.records] == [p[0] for p in demo.photos("train")[:3]]


@pytest.mark.parametrize("kwargs,message", [
    (dict(kind="coco", images="/nonexistent", captions="x.json"), "/nonexistent: no such image "
     "folder"),
    (dict(kind="coco", images="."), "--kind=coco needs --captions"),
    (dict(kind="div2k"), "--kind=div2k needs --images"),
    (dict(kind="embedded", size=66), "size=66: must be a multiple of 4"),
    (dict(kind="bsds"), "kind 'bsds': expected one of coco, div2k, embedded"),
])
def test_bad_arguments_are_one_line_data_errors(tmp_path, kwargs, message):
  with pytest.raises(DataError, match=re.escape(message)):
    sets.build(out_dir=str(tmp_path), **kwargs)


def test_div2k_crops_are_native_resolution_and_uncaptioned(tmp_path):
  folder = tmp_path / "DIV2K_valid_HR"
  folder.mkdir()
  sources = {"0801.png": photo(90, 100, 1), "0802.png": photo(70, 80, 2)}
  for name, image in sources.items():
    (folder / name).write_bytes(encode(image, "PNG"))
  (blind,) = sets.build("div2k", str(tmp_path / "sets"), size=SIZE, count=3, images=str(folder))
  assert blind.name == "div2k_realesrgan_64" and len(blind) == 3
  assert [r.source.split("@")[0] for r in blind.records] == ["0801.png", "0801.png", "0802.png"]
  batch = next(blind.batches(3))
  assert batch.captions == ["", "", ""] and batch.lq.shape == (3, SIZE // 4, SIZE // 4, 3)
  for r, gt in zip(blind.records, batch.gt):
    name, corner = r.source.split("@")
    left, top = map(int, corner.split(","))
    np.testing.assert_array_equal(gt, sources[name][top:top + SIZE, left:left + SIZE])
  with pytest.raises(DataError, match=r"0802.png: 80x70 is smaller than the 80\^2 crops"):
    sets.build("div2k", str(tmp_path / "big"), size=80, count=2, images=str(folder))
  assert os.listdir(tmp_path / "big") == []     # the failed set left nothing behind

"""`tip-prepare`: COCO and caption-table round trips, resume after an interruption, refusals."""

import collections
import json
import os
import subprocess
import sys

import pytest
from tests.fixtures.data import encode, photo, write_coco_captions

from tip_jax.data import inputs, prepare
from tip_jax.data.sources import ArrayRecordSource
from tip_jax.errors import DataError


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "tip_jax.cli.prepare", *args],
                        capture_output=True, text=True, timeout=120)


def _records(folder) -> list[dict]:
  source = ArrayRecordSource(f"{folder}/*.array_record")
  return [source[i] for i in range(len(source))]


@pytest.fixture
def image_folder(tmp_path):
  """Four images (JPEG, PNG, WebP) and a text file named like an image."""
  folder = tmp_path / "images"
  (folder / "sub").mkdir(parents=True)
  files = {"a.jpg": encode(photo(30, 40, 0), "JPEG"), "sub/b.png": encode(photo(24, 24, 1), "PNG"),
           "c.webp": encode(photo(20, 28, 2), "WEBP"), "d.jpg": encode(photo(32, 32, 3), "JPEG"),
           "notes.jpg": b"not an image at all"}
  for name, data in files.items():
    (folder / name).write_bytes(data)
  return folder, files


def test_coco_round_trip_and_rerun(image_folder, tmp_path):
  folder, files = image_folder
  names = ["a.jpg", "sub/b.png", "c.webp", "d.jpg", "notes.jpg", "missing.jpg"]
  ann = tmp_path / "captions.json"
  write_coco_captions(ann, names, {name: [f" {name} caption {k} " for k in range(2)]
                                   for name in names if name != "d.jpg"})
  out = tmp_path / "out"
  args = ["--images", str(folder), "--annotations", str(ann), "--output", str(out),
          "--shard_size", "4"]
  done = _cli(*args)
  assert done.returncode == 0, done.stderr
  assert ("2 shards, 3 records; skipped 3: missing_file 1, no_caption 1, not_image 1"
          in done.stdout)
  records = _records(out)
  assert [r["id"] for r in records] == ["10", "11", "12"]
  for record, name in zip(records, names):
    assert record["image"] == files[name]                   # stored as is
    assert record["captions"] == [f"{name} caption 0", f"{name} caption 1"]
    assert record["source"] == "coco"
  shards = sorted(os.listdir(out))
  assert shards == ["coco-00000-of-00002.array_record", "coco-00001-of-00002.array_record",
                    prepare.MANIFEST]
  before = {s: os.stat(out / s).st_mtime_ns for s in shards[:2]}
  again = _cli(*args)
  assert again.returncode == 0 and "(2 shards kept from an earlier run)" in again.stdout
  assert "skipped 3" in again.stdout
  assert before == {s: os.stat(out / s).st_mtime_ns for s in shards[:2]}


@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".tsv"])
def test_caption_table_round_trip(image_folder, tmp_path, ext):
  folder, files = image_folder
  rows = [("a.jpg", "a red square", "k1"), ("sub/b.png", "a blue square", "k2"),
          ("a.jpg", "a square, in red", "k1"), ("c.webp", "", "k3"), ("gone.png", "x", "k4")]
  table = tmp_path / f"captions{ext}"
  if ext == ".jsonl":
    lines = [json.dumps({"file_name": f, "caption": c, "key": k}) for f, c, k in rows]
    lines.insert(2, "{not json")
    table.write_text("\n".join(lines) + "\n")
  else:
    sep = "," if ext == ".csv" else "\t"
    table.write_text("\n".join([sep.join(("path", "text", "key"))] +
                               [sep.join((f, f'"{c}"' if sep in c else c, k)) for f, c, k in rows]))
  data = inputs.caption_table(str(folder), str(table))
  summary = prepare.prepare(data, str(tmp_path / "out"), shard_size=10, progress=False)
  expected_skips = {"missing_file": 1, "no_caption": 1} | ({"bad_line": 1} if ext == ".jsonl"
                                                             else {})
  assert summary["written"] == 2 and summary["skipped"] == expected_skips
  a, b = _records(tmp_path / "out")
  assert a["captions"] == ["a red square", "a square, in red"] and a["id"] == "k1"
  assert a["image"] == files["a.jpg"] and b["image"] == files["sub/b.png"]
  assert a["source"] == "captions"


class _Interrupted:
  """An input that stops (like Ctrl-C) after `after` items."""

  def __init__(self, data, after: int):
    self.data, self.after = data, after
    self.name, self.description = data.name, data.description
    self.parse_skipped = data.parse_skipped

  def __len__(self):
    return len(self.data)

  def read(self, start, stop):
    for item in self.data.read(start, stop):
      if self.after == 0:
        raise KeyboardInterrupt
      self.after -= 1
      yield item


def test_interrupted_run_resumes(tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  entries = []
  for i in range(7):
    (folder / f"{i}.png").write_bytes(encode(photo(16, 16, i), "PNG"))
    entries.append(inputs.Entry(str(folder / f"{i}.png"), [f"photo {i}"], str(i)))
  data = inputs.FileInput("set", "test:seven", entries, collections.Counter())
  out = str(tmp_path / "out")
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(_Interrupted(data, after=5), out, shard_size=2, progress=False)
  kept = sorted(f for f in os.listdir(out) if f.endswith(".array_record"))
  assert kept == ["set-00000-of-00004.array_record", "set-00001-of-00004.array_record"]
  assert not [f for f in os.listdir(out) if f.endswith(".partial")]
  first = os.stat(os.path.join(out, kept[0])).st_ino
  summary = prepare.prepare(data, out, shard_size=2, progress=False)
  assert summary == {"shards": 4, "resumed": 2, "written": 7, "skipped": {}}
  assert [r["id"] for r in _records(out)] == [str(i) for i in range(7)]
  assert os.stat(os.path.join(out, kept[0])).st_ino == first
  with pytest.raises(DataError, match="shards of another input or shard size"):
    prepare.prepare(data, out, shard_size=3, progress=False)


@pytest.mark.parametrize("case,message", [
    ("no_input", "give exactly one input"),
    ("no_folder", "no such image folder"),
    ("bad_json", "cannot read the annotations"),
    ("not_coco", "not a COCO captions file (missing 'annotations')"),
    ("foreign_shards", "tip-prepare did not write"),
])
def test_errors_are_one_line_and_keep_existing_files(image_folder, tmp_path, case, message):
  folder, _ = image_folder
  out = tmp_path / "out"
  out.mkdir()
  foreign = out / "old-00000-of-00001.array_record"
  foreign.write_bytes(b"keep me")
  ann = tmp_path / "ann.json"
  valid = {"images": [{"id": 1, "file_name": "a.jpg"}],
           "annotations": [{"image_id": 1, "caption": "x"}]}
  ann.write_text({"bad_json": "{", "not_coco": '{"images": []}'}.get(case, json.dumps(valid)))
  args = {"no_input": ["--images", str(folder)],
          "no_folder": ["--images", str(tmp_path / "nope"), "--annotations", str(ann)]
          }.get(case, ["--images", str(folder), "--annotations", str(ann)])
  done = _cli(*args, "--output", str(out))
  assert done.returncode == 1
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr
  assert foreign.read_bytes() == b"keep me"

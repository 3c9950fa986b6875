"""TFDS sets on disk: a pipeline source (array_record) and a tip-prepare input (any format)."""

import numpy as np
import pytest
from tests.fixtures.data import photo

from tip_jax import degrade
from tip_jax.data import inputs, prepare
from tip_jax.data.config import DataConfig
from tip_jax.data.pipeline import make_iterator
from tip_jax.data.sources import ArrayRecordSource, open_source
from tip_jax.errors import DataError
from tip_jax.models.tokenizer import bundled_tokenizer

pytest.importorskip("tensorflow")          # TFDS builds and reads sets with it
tfds = pytest.importorskip("tensorflow_datasets")


class TinyCaptions(tfds.core.GeneratorBasedBuilder):
  """Laid out like coco_captions: an image, `image/id`, and `captions/text` per example."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="png"),
        "image/id": np.int64,
        "captions": tfds.features.Sequence({"id": np.int64, "text": tfds.features.Text()}),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(5):
      yield i, {"image": photo(20, 24, i), "image/id": 100 + i,
                "captions": {"id": [1, 2], "text": [f"tiny {i} a", f"tiny {i} b"]}}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
  dirs = {}
  for file_format in ("array_record", "tfrecord"):
    dirs[file_format] = str(tmp_path_factory.mktemp(file_format))
    TinyCaptions(data_dir=dirs[file_format], file_format=file_format).download_and_prepare()
  return dirs


def test_tfds_source_feeds_the_pipeline(data_dirs):
  source = open_source(f"tfds:tiny_captions:train:{data_dirs['array_record']}")
  record = source[0]
  number = int(record["id"]) - 100
  assert record["captions"] == [f"tiny {number} a", f"tiny {number} b"]
  assert record["image"][:4] == b"\x89PNG" and record["source"] == "tiny_captions"
  batch = next(make_iterator(
      DataConfig(source=f"tfds:tiny_captions:train:{data_dirs['array_record']}", resolution=16,
                 num_workers=0), batch_size=5, seed=0, tokenizer=bundled_tokenizer(),
      degrade_config=degrade.DegradeConfig(size=(16, 16)), process_index=0, process_count=1))
  assert sorted(batch["index"]) == list(range(5))
  with pytest.raises(DataError, match="random access needs array_record"):
    open_source(f"tfds:tiny_captions:train:{data_dirs['tfrecord']}")
  with pytest.raises(DataError, match="tfds:no_such_set"):
    open_source(f"tfds:no_such_set:train:{data_dirs['tfrecord']}")


@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_prepare_from_tfds(data_dirs, tmp_path, file_format):
  data = inputs.TFDSInput("tiny_captions", "train", data_dirs[file_format])
  summary = prepare.prepare(data, str(tmp_path), shard_size=2, progress=False)
  assert summary == {"shards": 3, "resumed": 0, "written": 5, "skipped": {}}
  records = ArrayRecordSource(f"{tmp_path}/tiny_captions-*.array_record")
  ids = sorted(int(records[i]["id"]) for i in range(len(records)))
  assert ids == [100, 101, 102, 103, 104]
  with pytest.raises(DataError, match="no split 'test'"):
    inputs.TFDSInput("tiny_captions", "test", data_dirs[file_format])

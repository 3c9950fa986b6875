"""Loading a transformers CLIPModel folder: bad folders, older key sets, tokenizer fallback."""

import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from tip_jax.convert.clip import load_clip
from tip_jax.convert.diffusers import convert_state_dict
from tip_jax.errors import CheckpointError
from tip_jax.models import tokenizer as tok_lib

torch = pytest.importorskip("torch")
from tests.fixtures import clip as clip_fixture  # noqa: E402  (imports torch)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """A saved tiny CLIPModel with the tokenizer files beside it."""
  return clip_fixture.save_clip(clip_fixture.torch_clip(), tmp_path_factory.mktemp("clip"))


@pytest.mark.parametrize("keep,needed", [
    ((), "config.json"),
    (("config.json",), "model.safetensors"),
], ids=["empty", "config_only"])
def test_missing_files_name_the_file(folder, tmp_path, keep, needed):
  for name in keep:
    shutil.copy(folder / name, tmp_path / name)
  with pytest.raises(CheckpointError) as excinfo:
    load_clip(str(tmp_path))
  message = str(excinfo.value)
  assert message.startswith(str(tmp_path / needed) + ": not found")
  assert "openai/clip-vit-large-patch14" in message and "\n" not in message


def test_absent_folder(tmp_path):
  with pytest.raises(CheckpointError, match="absent/config.json: not found"):
    load_clip(str(tmp_path / "absent"))


def test_older_key_sets_convert_identically(folder):
  """transformers 4 saved `position_ids` buffers for both towers; `logit_scale` is never
  read. Neither may block the load or change a param."""
  scorer = load_clip(str(folder))
  state = load_file(str(folder / "model.safetensors"))
  assert "logit_scale" in state
  state["text_model.embeddings.position_ids"] = np.arange(77)[None]
  state["vision_model.embeddings.position_ids"] = np.arange(50)[None]
  converted = convert_state_dict(state, scorer.module, "clip")
  jax.tree.map(np.testing.assert_array_equal, converted, scorer.params)
  del state["visual_projection.weight"]
  with pytest.raises(CheckpointError, match="missing key for visual_projection/kernel"):
    convert_state_dict(state, scorer.module, "clip")


def test_without_tokenizer_files_the_bundled_one_is_used(folder, tmp_path):
  for name in ("config.json", "model.safetensors"):
    shutil.copy(folder / name, tmp_path / name)
  bare, full = load_clip(str(tmp_path)), load_clip(str(folder))
  captions = ["a photo of a cat", "Deblur with sigma 3.0;"]
  np.testing.assert_array_equal(tok_lib.tokenize(bare.tokenizer, captions),
                                tok_lib.tokenize(full.tokenizer, captions))
  np.testing.assert_array_equal(bare.text_embeds(captions), full.text_embeds(captions))

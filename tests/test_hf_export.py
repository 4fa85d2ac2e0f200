"""export.hf writes Hugging Face CLIP / SigLIP directories that round-trip bit for bit through models.hf_clip and
match the layout of checkpoints saved by transformers (tests/fixtures/hf_*_tiny, made by make_hf_fixtures.py)."""

import os

import numpy as np
import pytest
from safetensors.numpy import load_file

import tokenization as tokenizers
from configs import clip_shapes
from export import hf, jax_export
from models import hf_clip

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def model_dir(kind: str) -> str:
  return os.path.join(FIXTURES, f"hf_{kind}_tiny")


def leaves(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    out |= leaves(v, f"{prefix}{k}/") if isinstance(v, dict) else {prefix + k: v}
  return out


def keys(config: dict) -> dict:
  """The key tree of a config (nested dicts of their keys), without values."""
  return {k: keys(v) if isinstance(v, dict) else None for k, v in config.items()}


@pytest.fixture(scope="module", params=("clip", "siglip"))
def exported(request, tmp_path_factory):
  """(kind, kwargs, params, the directory export.hf.save wrote from the imported fixture)."""
  kind = request.param
  kwargs, params = hf_clip.load(model_dir(kind))
  out = str(tmp_path_factory.mktemp(f"hf_{kind}"))
  base = hf_clip.read_config(model_dir(kind))
  hf.save(out, kwargs, params, hf.tokenizer_files(model_dir(kind)), base_config=base)
  return kind, kwargs, params, out


def test_export_then_import_gives_the_same_params_bit_for_bit(exported):
  _, kwargs, params, out = exported
  kwargs_back, params_back = hf_clip.load(out)
  assert kwargs_back == kwargs
  ours, back = leaves(params), leaves(params_back)
  assert ours.keys() == back.keys()
  for name, value in ours.items():
    assert back[name].dtype == value.dtype and np.array_equal(back[name], value), name


def test_exported_tensors_and_config_equal_the_transformers_checkpoint(exported):
  kind, _, _, out = exported
  reference, ours = load_file(os.path.join(model_dir(kind), "model.safetensors")), load_file(f"{out}/model.safetensors")
  assert sorted(ours) == sorted(reference)
  for name, value in reference.items():
    assert ours[name].shape == value.shape and np.array_equal(ours[name], value), name
  assert hf_clip.read_config(out) == hf_clip.read_config(model_dir(kind))


def test_config_without_a_base_has_the_reference_keys_and_architecture(exported):
  kind, kwargs, params, _ = exported
  config = hf_clip.hf_config(kwargs, 32)
  reference = hf_clip.read_config(model_dir(kind))
  assert keys(config) == keys(reference)
  assert hf_clip.two_tower_kwargs(config) == hf_clip.two_tower_kwargs(reference)


def test_exported_directory_carries_the_tokenizer(exported):
  kind, _, _, out = exported
  ref = np.load(os.path.join(FIXTURES, f"hf_{kind}_reference.npz"))
  tok = tokenizers.get("clip_bpe" if kind == "clip" else "siglip", out)
  np.testing.assert_array_equal(tok.encode(list(ref["texts"]), ref["input_ids"].shape[1]), ref["input_ids"])


def test_the_jax_export_copies_the_hf_tokenizer_and_its_special_tokens(exported, tmp_path):
  kind = exported[0]
  entry = jax_export._copy_tokenizer("clip_bpe" if kind == "clip" else "siglip", model_dir(kind), str(tmp_path))
  assert (entry["bos_id"] is None) == (kind == "siglip")  # SigLIP rows start with the text
  ref = np.load(os.path.join(FIXTURES, f"hf_{kind}_reference.npz"))
  tok = tokenizers.get(entry["name"], str(tmp_path / entry["file"]))  # as export.embed reads the model card
  np.testing.assert_array_equal(tok.encode(list(ref["texts"]), ref["input_ids"].shape[1]), ref["input_ids"])


def test_flat_params_safetensors_round_trip_any_tower(exported, tmp_path):
  _, _, params, _ = exported
  path = str(tmp_path / "image_tower.safetensors")
  hf.save_params(path, params["image_tower"])
  back = hf.load_params(path)
  assert "encoder/block0/attn/query/kernel" in load_file(path)
  for name, value in leaves(params["image_tower"]).items():
    assert np.array_equal(leaves(back)[name], value), name


def test_a_two_tower_without_hf_layout_is_refused_with_its_reasons():
  model = clip_shapes.get_config("vit,tiny").model
  kwargs = dict(
    image_encoder="vit",
    image_kwargs={k: v for k, v in model.image.to_dict().items() if k != "name"},
    text_encoder="text_transformer",
    text_kwargs={k: v for k, v in model.text.to_dict().items() if k != "name"},
    embed_dim=model.embed_dim,
  )
  with pytest.raises(ValueError, match="no Hugging Face CLIPModel layout") as error:
    hf_clip.hf_config(kwargs, 32)
  assert "image_kwargs.pool='gap' (HF: 'cls')" in str(error.value)
  assert "text_kwargs.pool=None (HF: 'first_eos')" in str(error.value)

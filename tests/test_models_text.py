"""Text transformer, two-tower CLIP/SigLIP wrapper and captioning decoder, at CPU-test sizes."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models

TINY_TEXT = dict(vocab_size=50, context_length=8, width=32, depth=1, num_heads=2)
TOKENS = jnp.array([[5, 7, 9, 2, 0, 0, 0, 0], [3, 4, 6, 8, 11, 2, 0, 0]], jnp.int32)


def key(seed: int = 0):
  # XLA:CPU compiles threefry random-number code slowly (seconds per init); "rbg" keys compile ~5x faster.
  return jax.random.key(seed, impl="rbg")


def init(model, *args):
  return jax.jit(lambda k: model.init(k, *args, train=False))(key())


@pytest.mark.parametrize("causal", [True, False])
def test_text_transformer_pools_the_non_pad_tokens_only(causal):
  """A padded row gives the features of the same row without padding: causal pools the last non-pad (EOT) token,
  bidirectional averages the non-pad tokens and masks pads out of attention."""
  model = models.get("text_transformer")(causal=causal, **TINY_TEXT)
  variables = init(model, TOKENS)
  out, unpadded = jax.jit(
    lambda: (model.apply(variables, TOKENS, train=False), model.apply(variables, TOKENS[:1, :4], train=False))
  )()
  chex.assert_shape(out, (2, 32))
  np.testing.assert_allclose(out[0], unpadded[0], rtol=1e-5, atol=1e-5)


def test_text_dropout_needs_train_and_a_dropout_rng():
  model = models.get("text_transformer")(causal=False, dropout_rate=0.1, **TINY_TEXT)
  variables = init(model, TOKENS)

  @jax.jit
  def views(rng):
    a = model.apply(variables, TOKENS, train=True, rngs={"dropout": rng})
    b = model.apply(variables, TOKENS, train=True, rngs={"dropout": jax.random.fold_in(rng, 1)})
    return a, b, model.apply(variables, TOKENS, train=True), model.apply(variables, TOKENS, train=False)

  a, b, no_rng, eval_out = views(key(1))
  assert not np.allclose(a, b)  # SimCSE: two dropout views of one batch differ
  np.testing.assert_allclose(no_rng, eval_out, rtol=1e-6)


def test_two_tower_returns_normalised_features_and_scales():
  model = models.get("two_tower")(
    image_kwargs=dict(depth=1),
    text_kwargs=TINY_TEXT,
    embed_dim=16,
    logit_scale_init=math.log(10.0),
    logit_bias_init=-10.0,
  )
  images = jnp.ones((2, 16, 16, 3))
  out = jax.jit(lambda k: model.apply(model.init(k, images, TOKENS, train=False), images, TOKENS, train=False))(key())
  for name in ("image_features", "text_features"):
    chex.assert_shape(out[name], (2, 16))
    np.testing.assert_allclose(jnp.linalg.norm(out[name], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["logit_scale"], 10.0, rtol=1e-6)
  np.testing.assert_allclose(out["logit_bias"], -10.0)


def test_two_tower_clip_defaults_have_temperature_007_and_no_bias():
  model = models.get("two_tower")(image_kwargs=dict(depth=1), text_kwargs=TINY_TEXT, embed_dim=16)
  # Initialising through encode_text builds the text side and the scales only: all this test needs.
  text, variables = jax.jit(lambda k: model.init_with_output(k, TOKENS, train=False, method="encode_text"))(key())
  chex.assert_shape(text, (2, 16))
  assert "logit_bias" not in variables["params"]
  np.testing.assert_allclose(jnp.exp(variables["params"]["logit_scale"]), 1 / 0.07, rtol=1e-5)


def test_caption_decoder_is_causal_and_greedy_decode_stops_at_eos():
  model = models.get("caption_decoder")(vocab_size=20, context_length=6, width=16, depth=1, num_heads=2)
  image_tokens = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 24)), jnp.float32)
  tokens = jnp.array([[1, 4, 5, 6, 7, 8], [1, 9, 3, 2, 0, 0]], jnp.int32)
  params = init(model, tokens, image_tokens)["params"]
  logits = jax.jit(lambda t: model.apply({"params": params}, t, jnp.concatenate([image_tokens] * 2), train=False))(
    jnp.concatenate([tokens, tokens.at[:, 3:].set(0)])
  )
  chex.assert_shape(logits, (4, 6, 20))
  np.testing.assert_allclose(logits[:2, :3], logits[2:, :3], rtol=1e-5, atol=1e-5)  # no look-ahead

  # Make token 3 (EOS) the argmax at every position: decoding gives BOS, EOS, then padding.
  head = params["head"]
  bias = jnp.zeros(20).at[3].set(100.0)
  params = {**params, "head": {"kernel": head["kernel"] * 0, "bias": bias}}
  out = jax.jit(lambda p: model.greedy_decode(p, image_tokens, max_len=6, bos_id=1, eos_id=3))(params)
  np.testing.assert_array_equal(out, [[1, 3, 0, 0, 0, 0]] * 2)

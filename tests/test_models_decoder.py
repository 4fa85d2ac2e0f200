"""Contrastive-search decoding of the captioning decoder."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models

VOCAB, LEN = 12, 6


@pytest.fixture(scope="module")
def decoder():
  model = models.get("caption_decoder")(vocab_size=VOCAB, context_length=LEN, width=16, depth=1, num_heads=2)
  image_tokens = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 8)), jnp.float32)
  tokens = jnp.ones((3, LEN), jnp.int32)
  params = jax.jit(lambda k: model.init(k, tokens, image_tokens, train=False))(jax.random.key(0, impl="rbg"))["params"]
  return model, params, image_tokens


def _search(model, params, image_tokens, **kwargs):
  fn = functools.partial(model.contrastive_search, max_len=LEN, bos_id=1, eos_id=VOCAB + 1, **kwargs)
  return jax.jit(fn)(params, image_tokens)


def test_contrastive_search_with_alpha_zero_is_greedy(decoder):
  model, params, image_tokens = decoder
  greedy = jax.jit(lambda p, x: model.greedy_decode(p, x, LEN, 1, VOCAB + 1))(params, image_tokens)
  np.testing.assert_array_equal(_search(model, params, image_tokens, top_k=3, alpha=0.0), greedy)
  assert len(np.unique(np.asarray(greedy)[:, 1:])) > 1  # not a trivial constant caption


def test_contrastive_search_with_alpha_one_picks_the_token_least_like_the_context(decoder):
  model, params, image_tokens = decoder
  out = _search(model, params, image_tokens[:1], top_k=VOCAB, alpha=1.0)
  # By hand for the first step: every token v after BOS, and the cosine of its state to BOS's.
  candidates = jnp.full((VOCAB, LEN), 0, jnp.int32).at[:, 0].set(1).at[:, 1].set(jnp.arange(VOCAB))
  _, hidden = jax.jit(functools.partial(model.apply, train=False, return_hidden=True))(
    {"params": params}, candidates, jnp.repeat(image_tokens[:1], VOCAB, 0)
  )
  h = np.asarray(hidden, np.float64)
  cos = np.sum(h[:, 1] * h[:, 0], -1) / np.linalg.norm(h[:, 1], axis=-1) / np.linalg.norm(h[:, 0], axis=-1)
  assert int(out[0, 1]) == int(np.argmin(cos))


def test_contrastive_search_rejects_bad_settings(decoder):
  model, params, image_tokens = decoder
  with pytest.raises(ValueError, match="alpha"):
    model.contrastive_search(params, image_tokens, LEN, 1, 2, alpha=1.5)

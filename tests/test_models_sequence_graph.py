"""Encoders for time series (temporal conv), graphs (GIN) and PixPro's pixel propagation module, at CPU-test sizes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

import models


def key(seed: int = 0):
  return jax.random.key(seed, impl="rbg")  # compiles faster than threefry on XLA:CPU


def test_temporal_conv_pools_over_time_and_is_translation_equivariant_inside():
  model = models.get("temporal_conv")(width=8, out_dim=6, depth=2)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 24, 3)), jnp.float32)
  params = jax.jit(lambda k: model.init(k, x, train=False))(key())
  run = jax.jit(lambda p, x: model.apply(p, x, train=False, return_tokens=True))
  pooled, tokens = run(params, x)
  chex.assert_shape((pooled, tokens), ((2, 6), (2, 24, 6)))
  np.testing.assert_allclose(pooled, tokens.max(axis=1))
  # Shifting the series shifts the per-timestep outputs, away from the zero-padded borders (receptive field 1 + 2 * 6).
  _, shifted = run(params, jnp.roll(x, 2, axis=1))
  np.testing.assert_allclose(shifted[:, 9:-7], tokens[:, 7:-9], rtol=1e-4, atol=1e-5)


def _graphs():
  adj = np.zeros((2, 5, 5), np.float32)
  adj[:, [0, 1], [1, 2]] = adj[:, [1, 2], [0, 1]] = 1  # a path 0-1-2 in both graphs
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)  # graph 1 has an isolated node 3
  x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
  x[1, :3] = x[0, :3]
  return jnp.asarray(x), jnp.asarray(adj), jnp.asarray(mask)


def test_gin_ignores_padding_and_is_permutation_invariant():
  model = models.get("gin")(width=8, depth=2)
  x, adj, mask = _graphs()
  params = jax.jit(lambda k: model.init(k, x, adj, mask, train=False))(key())
  run = jax.jit(lambda x, a, m: model.apply(params, x, a, m, train=False))
  out = run(x, adj, mask)
  chex.assert_shape(out, (2, 16))
  # Garbage in padded slots changes nothing; permuting the nodes changes nothing.
  noisy = x.at[0, 3:].set(100.0)
  np.testing.assert_allclose(run(noisy, adj.at[0, 3, 0].set(1).at[0, 0, 3].set(1), mask), out, rtol=1e-5)
  perm = jnp.array([2, 0, 4, 1, 3])
  np.testing.assert_allclose(run(x[:, perm], adj[:, perm][:, :, perm], mask[:, perm]), out, rtol=1e-5, atol=1e-6)
  assert not np.allclose(out[0], out[1])  # the extra node counts


def test_pixel_propagation_matches_its_equation_without_value_transform():
  model = models.get("pixel_propagation")(gamma=2.0, transform_layers=0)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 4)), jnp.float32)
  variables = model.init(key(), x, train=False)
  y = jax.jit(lambda x: model.apply(variables, x, train=False))(x)
  u = np.asarray(x, np.float64) / np.linalg.norm(x, axis=-1, keepdims=True)
  want = np.einsum("bpq,bqc->bpc", np.maximum(np.einsum("bpc,bqc->bpq", u, u), 0) ** 2, u)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
  for layers in (1, 2):
    m = models.get("pixel_propagation")(transform_layers=layers)
    out = jax.eval_shape(lambda m=m: m.apply(m.init(key(), x, train=False), x, train=False))
    chex.assert_shape(out, (2, 6, 4))

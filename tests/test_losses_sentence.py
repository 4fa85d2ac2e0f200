"""SimCSE-family building blocks against NumPy float64: weighted / debiased InfoNCE, reference-model refinement,
WhitenedCSE's shuffled group whitening."""

import functools

import jax
import numpy as np
import pytest

import losses


def _normal(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _cos(a, b):
  a, b = (np.asarray(x, np.float64) for x in (a, b))
  a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
  return a @ b.T


def test_weighted_info_nce_without_weights_is_simcse_cross_entropy():
  z1, z2 = _normal(0, 8, 6), _normal(1, 8, 6)
  s = _cos(z1, z2) / 0.05
  want = np.mean(np.log(np.sum(np.exp(s - s.max(1, keepdims=True)), 1)) + s.max(1) - np.diag(s))
  np.testing.assert_allclose(jax.jit(losses.weighted_info_nce)(z1, z2), want, rtol=1e-5)


def test_weighted_info_nce_weights_negatives_and_pairs():
  z1, z2 = _normal(0, 8, 6), _normal(1, 8, 6)
  w = np.random.default_rng(2).uniform(size=(8, 8)).astype(np.float32)
  w[0, 3] = 0.0
  p = np.array([1, 0, 1, 1, 0.5, 1, 1, 1], np.float32)
  s = _cos(z1, z2) / 0.1
  weights = np.where(np.eye(8, dtype=bool), 1.0, w)
  per = np.log(np.sum(weights * np.exp(s), 1)) - np.diag(s)
  fn = jax.jit(functools.partial(losses.weighted_info_nce, temperature=0.1))
  np.testing.assert_allclose(fn(z1, z2, w, p), np.sum(p * per) / np.sum(p), rtol=1e-5)
  with pytest.raises(ValueError, match="negative_weights"):
    losses.weighted_info_nce(z1, z2, w[:, :4])


def test_debiased_info_nce_matches_chuang_et_al():
  z1, z2 = _normal(0, 8, 6), _normal(1, 8, 6)
  tau, tau_plus = 0.5, 0.1
  e = np.exp(_cos(z1, z2) / tau)
  pos, m = np.diag(e), 7
  neg = e.sum(1) - pos
  ng = np.maximum((neg - tau_plus * m * pos) / (1 - tau_plus), m * np.exp(-1 / tau))
  want = np.mean(-np.log(pos / (pos + ng)))
  both = jax.jit(
    lambda a, b: (
      losses.debiased_info_nce(a, b, temperature=tau, tau_plus=tau_plus),
      losses.debiased_info_nce(a, b, temperature=tau, tau_plus=0.0),
      losses.weighted_info_nce(a, b, temperature=tau),
    )
  )
  debiased, plain, simcse = both(z1, z2)
  np.testing.assert_allclose(debiased, want, rtol=1e-5)
  np.testing.assert_allclose(plain, simcse, rtol=1e-5)


def test_reference_pair_weights_drop_false_negatives_and_noisy_pairs():
  r1 = np.array([[1, 0], [0.95, 0.31], [0, 1], [-1, 0.1]], np.float32)
  r2 = np.array([[1, 0.1], [1, 0], [-0.2, -1], [1, 0]], np.float32)
  fn = functools.partial(losses.reference_pair_weights, max_negative_similarity=0.9, min_positive_similarity=0.0)
  neg, pair = jax.jit(fn)(r1, r2)
  cos = _cos(r1, r2)
  np.testing.assert_array_equal(neg, np.where(np.eye(4, dtype=bool) | (cos <= 0.9), 1.0, 0.0))
  assert neg[0, 1] == 0 and neg[1, 0] == 0  # near-duplicates of the anchor are not negatives
  np.testing.assert_array_equal(pair, [1, 1, 0, 0])


def test_shuffled_group_whitening_whitens_each_shuffled_group():
  x = _normal(3, 32, 8) @ _normal(4, 8, 8)  # correlated channels
  rng = jax.random.key(5)
  whiten = jax.jit(functools.partial(losses.shuffled_group_whitening, num_groups=2, eps=0.0))
  white = np.asarray(whiten(rng, x))
  perm = np.asarray(jax.random.permutation(rng, 8))
  for g in range(2):
    cols = perm[4 * g : 4 * g + 4]
    np.testing.assert_allclose(white[:, cols].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(white[:, cols].T @ white[:, cols] / 32, np.eye(4), atol=1e-3)
    # ZCA: the symmetric whitening matrix Sigma^(-1/2), in float64.
    xc = np.asarray(x, np.float64)[:, cols] - np.asarray(x, np.float64)[:, cols].mean(0)
    lam, u = np.linalg.eigh(xc.T @ xc / 32)
    np.testing.assert_allclose(white[:, cols], xc @ u @ np.diag(lam**-0.5) @ u.T, rtol=1e-3, atol=1e-3)
  across = white[:, perm[:4]].T @ white[:, perm[4:]] / 32
  assert np.abs(across).max() > 0.05  # channels of different groups stay correlated
  other = whiten(jax.random.key(6), x)
  assert not np.allclose(other, white, atol=1e-2)  # another key: another view
  with pytest.raises(ValueError, match="divide"):
    losses.shuffled_group_whitening(rng, x, num_groups=3)

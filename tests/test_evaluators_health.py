"""Health metrics against direct numpy float64 formulas."""

import jax
import numpy as np
import pytest

from evaluators import alignment, effective_rank, uniformity
from evaluators.health import positive_negative_similarities


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pair(seed=0, n=64, d=16):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(n, d))
  return z1, z1 + 0.5 * rng.normal(size=(n, d))


@pytest.mark.parametrize("alpha", [1, 2])
def test_alignment_matches_numpy(alpha):
  z1, z2 = _pair()
  expected = np.mean(np.linalg.norm(_unit(z1) - _unit(z2), axis=1) ** alpha)
  assert float(alignment(z1, z2, alpha=alpha)) == pytest.approx(expected, rel=1e-5)


def test_uniformity_matches_numpy_and_jits():
  z, _ = _pair()
  u = _unit(z)
  i, j = np.triu_indices(len(u), k=1)
  expected = np.log(np.mean(np.exp(-2 * np.sum((u[i] - u[j]) ** 2, axis=1))))
  assert float(uniformity(z)) == pytest.approx(expected, rel=1e-5)
  assert float(jax.jit(uniformity)(z)) == pytest.approx(expected, rel=1e-5)


def test_effective_rank_of_identity_like_matrix_is_its_rank():
  z = np.zeros((12, 20))
  z[np.arange(5), np.arange(5)] = 3.0
  rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(20, 20)))
  assert float(effective_rank(z)) == pytest.approx(5.0, rel=1e-5)
  assert float(effective_rank(z @ rotation)) == pytest.approx(5.0, rel=1e-5)
  assert float(effective_rank(np.eye(8))) == pytest.approx(8.0, rel=1e-5)


def test_effective_rank_of_unequal_spectrum_matches_entropy():
  z = np.diag([4.0, 2.0, 1.0, 1.0])
  p = np.array([4.0, 2.0, 1.0, 1.0]) / 8.0
  assert float(effective_rank(z)) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-5)


def test_positive_negative_similarities_match_numpy():
  z1, z2 = _pair(n=7)
  sims = _unit(z1) @ _unit(z2).T
  positives, negatives = positive_negative_similarities(z1, z2)
  np.testing.assert_allclose(positives, np.diag(sims), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(negatives, sims[~np.eye(7, dtype=bool)], rtol=1e-5, atol=1e-6)

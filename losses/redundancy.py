"""Redundancy reduction: Barlow Twins and VICReg, with batch statistics over all devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses import collectives
from losses.validation import check_pair


def _global_mean(x, axis_name):
  """Mean over the rows of the global batch: x [n, ...] -> [...]."""
  return collectives.psum(jnp.sum(x, axis=0), axis_name) / (x.shape[0] * collectives.axis_size(axis_name))


def _off_diagonal_sq_sum(m):
  return jnp.sum(m**2) - jnp.sum(jnp.diagonal(m) ** 2)


def barlow_twins(
  z1: jax.Array, z2: jax.Array, *, lambda_param: float = 5e-3, eps: float = 1e-5, axis_name: str | None = None
) -> jax.Array:
  """Barlow Twins (Zbontar et al. 2021, eq. 1; lightly BarlowTwinsLoss).

  Args:
    z1, z2: [n, D] local embeddings of the two views.
    lambda_param: weight of the redundancy term. eps: batch-norm epsilon (torch's 1e-5).

  Each view is batch-normalised over the global batch (biased variance, no affine), then
  C = z1n^T z2n / N and L = sum_k (1 - C_kk)^2 + lambda sum_{k != l} C_kl^2.
  With `axis_name` the statistics and C are psum-reduced, so the result equals one device
  on the whole batch (lightly normalises per device instead).
  """
  check_pair("z1", z1, "z2", z2)

  def batch_norm(z):
    z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
    mean = _global_mean(z, axis_name)
    var = _global_mean((z - mean) ** 2, axis_name)
    return (z - mean) / jnp.sqrt(var + eps)

  big_n = z1.shape[0] * collectives.axis_size(axis_name)
  c = collectives.psum(batch_norm(z1).T @ batch_norm(z2), axis_name) / big_n
  return jnp.sum((1 - jnp.diagonal(c)) ** 2) + lambda_param * _off_diagonal_sq_sum(c)


def vicreg(
  z1: jax.Array,
  z2: jax.Array,
  *,
  lambda_param: float = 25.0,
  mu_param: float = 25.0,
  nu_param: float = 1.0,
  eps: float = 1e-4,
  axis_name: str | None = None,
) -> jax.Array:
  """VICReg (Bardes et al. 2022; lightly VICRegLoss).

  Args:
    z1, z2: [n, D] local embeddings of the two views.
    lambda_param, mu_param, nu_param: weights of invariance, variance and covariance.

  L = lambda mean((z1 - z2)^2) + mu (v(z1) + v(z2)) / 2 + nu (c(z1) + c(z2)), where over
  the global batch of N, with unbiased covariance Cov(z) (D x D):
    v(z) = mean_k relu(1 - sqrt(Cov_kk + eps)),   c(z) = sum_{k != l} Cov_kl^2 / D.
  """
  check_pair("z1", z1, "z2", z2)
  if z1.shape[0] * collectives.axis_size(axis_name) < 2:
    raise ValueError(f"vicreg needs a global batch of at least 2, got local shape {z1.shape}")
  big_n = z1.shape[0] * collectives.axis_size(axis_name)
  dim = z1.shape[1]
  dtype = jnp.promote_types(z1.dtype, jnp.float32)  # at least float32, float64 kept
  z1, z2 = z1.astype(dtype), z2.astype(dtype)
  invariance = _global_mean(jnp.mean((z1 - z2) ** 2, axis=1), axis_name)

  def variance_and_covariance(z):
    centered = z - _global_mean(z, axis_name)
    cov = collectives.psum(centered.T @ centered, axis_name) / (big_n - 1)
    variance = jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(jnp.diagonal(cov) + eps)))
    return variance, _off_diagonal_sq_sum(cov) / dim

  v1, c1 = variance_and_covariance(z1)
  v2, c2 = variance_and_covariance(z2)
  return lambda_param * invariance + mu_param * 0.5 * (v1 + v2) + nu_param * (c1 + c2)

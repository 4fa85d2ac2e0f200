"""Alignment and uniformity (Wang & Isola 2020), usable as additive terms on any loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses import collectives
from losses.infonce import l2_normalize
from losses.validation import check_embeddings, check_pair, check_positive


def alignment(
  x: jax.Array, y: jax.Array, *, alpha: float = 2.0, normalize: bool = True, axis_name: str | None = None
) -> jax.Array:
  """L_align = E_i ||x_i - y_i||_2^alpha over the global batch of positive pairs.

  Args:
    x, y: [n, D] local embeddings of positive pairs (L2-normalised first if `normalize`).
  """
  check_pair("x", x, "y", y)
  check_positive("alpha", alpha)
  if normalize:
    x, y = l2_normalize(x), l2_normalize(y)
  return collectives.pmean(jnp.mean(jnp.sum((x - y) ** 2, axis=1) ** (alpha / 2)), axis_name)


def uniformity(x: jax.Array, *, t: float = 2.0, normalize: bool = True, axis_name: str | None = None) -> jax.Array:
  """L_uniform = log E_{i<j} exp(-t ||x_i - x_j||_2^2) over all pairs of the global batch.

  Args:
    x: [n, D] local embeddings (L2-normalised first if `normalize`); global batch N >= 2.
  Each device scores its rows against all rows, which counts every pair twice; the mean
  over ordered pairs i != j equals the mean over i < j.
  """
  check_embeddings("x", x)
  check_positive("t", t)
  if normalize:
    x = l2_normalize(x)
  n = x.shape[0]
  everyone = collectives.all_gather(x, axis_name)
  big_n = everyone.shape[0]
  if big_n < 2:
    raise ValueError(f"uniformity needs a global batch of at least 2, got {big_n}")
  sq_dist = jnp.sum(x**2, axis=1)[:, None] + jnp.sum(everyone**2, axis=1)[None, :] - 2 * x @ everyone.T
  rows = collectives.axis_index(axis_name) * n + jnp.arange(n)
  exponent = jnp.where(rows[:, None] == jnp.arange(big_n)[None, :], -jnp.inf, -t * jnp.maximum(sq_dist, 0.0))
  # A shared shift keeps exp() in range; it cancels in the log.
  shift = jax.lax.stop_gradient(collectives.pmax(jnp.max(exponent), axis_name))
  total = collectives.psum(jnp.sum(jnp.exp(exponent - shift)), axis_name)
  return jnp.log(total / (big_n * (big_n - 1))) + shift

"""Representation health metrics: alignment, uniformity, effective rank, positive/negative similarities.

All take embeddings as [N, D] arrays, L2-normalise rows where the definition asks for unit vectors, and are pure jnp,
so they can run inside a jitted train step as well as on host arrays.
"""

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  x = jnp.asarray(x, jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def alignment(z1: jax.Array, z2: jax.Array, alpha: float = 2) -> jax.Array:
  """E ||f(x) - f(y)||^alpha over positive pairs (row i of z1, row i of z2); Wang & Isola 2020. Lower is better."""
  return jnp.mean(jnp.linalg.norm(l2_normalize(z1) - l2_normalize(z2), axis=-1) ** alpha)


def uniformity(z: jax.Array, t: float = 2) -> jax.Array:
  """log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2); Wang & Isola 2020. Lower (more negative) is more uniform.

  [N, D] -> scalar; forms the N x N Gram matrix, so keep N to a batch or a few thousand rows.
  """
  z = l2_normalize(z)
  n = z.shape[0]
  sq_dists = jnp.maximum(2.0 - 2.0 * jnp.matmul(z, z.T, precision="highest"), 0.0)
  upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
  return jax.nn.logsumexp(jnp.where(upper, -t * sq_dists, -jnp.inf)) - jnp.log(n * (n - 1) / 2)


def effective_rank(z: jax.Array) -> jax.Array:
  """exp(H(p)) with p the singular values of z divided by their sum; Roy & Vetterli 2007 (RankMe uses it too).

  [N, D] -> scalar in [1, min(N, D)]; equals the rank when the non-zero singular values are equal.
  """
  s = jnp.linalg.svd(jnp.asarray(z, jnp.float32), compute_uv=False)
  p = s / jnp.sum(s)
  return jnp.exp(jnp.sum(jax.scipy.special.entr(p)))


def positive_negative_similarities(z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Cosine similarities of positive pairs (z1[i], z2[i]) -> [N] and of all other pairs (z1[i], z2[j]) -> [N(N-1)]."""
  sims = jnp.matmul(l2_normalize(z1), l2_normalize(z2).T, precision="highest")
  n = sims.shape[0]
  # Dropping the first element of the flattened matrix puts each diagonal entry at the end of a row of n + 1.
  off_diagonal = sims.reshape(-1)[1:].reshape(n - 1, n + 1)[:, :-1].reshape(-1)
  return jnp.diagonal(sims), off_diagonal

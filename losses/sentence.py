"""Sentence-embedding contrast (SimCSE family): the SimCSE InfoNCE with weighted negatives, its debiased estimate,
reference-model refinement of pairs, and WhitenedCSE's shuffled group whitening views.

Embeddings are local [n, D] rows; with `axis_name` the candidates (and the whitening statistics) are global.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses import collectives
from losses.infonce import l2_normalize
from losses.validation import check_embeddings, check_pair, check_positive


def shuffled_group_whitening(
  rng: jax.Array, x: jax.Array, *, num_groups: int, eps: float = 1e-5, axis_name: str | None = None
) -> jax.Array:
  """One WhitenedCSE view (Zhuo et al. 2023, shuffled group whitening): [n, D] -> [n, D].

  The D channels are shuffled by a random permutation (from `rng`, the same on every device), split into
  `num_groups` groups of D / G, and each group is ZCA-whitened over the global batch:
    x_g <- (x_g - mu_g) U_g diag(lambda_g + eps)^(-1/2) U_g^T,  Sigma_g = U_g diag(lambda_g) U_g^T = cov(x_g) (1/N),
  then un-shuffled. Different permutations whiten different channel groups together, so calling this with
  different keys on the same embeddings gives different positive views (the authors' code: 3 views, 128 groups of
  6 channels for BERT-base, eps 0). D / G should stay below the global batch for a full-rank covariance. Gradients
  flow through the whitening (as in the reference, via the eigendecomposition).
  """
  check_embeddings("x", x)
  n, d = x.shape
  if d % num_groups:
    raise ValueError(f"num_groups={num_groups} must divide the embedding dim {d}")
  perm = jax.random.permutation(rng, d)
  groups = x[:, perm].reshape(n, num_groups, d // num_groups)
  count = n * collectives.axis_size(axis_name)
  mean = collectives.psum(jnp.sum(groups, axis=0), axis_name) / count
  centred = groups - mean
  cov = collectives.psum(jnp.einsum("ngi,ngj->gij", centred, centred), axis_name) / count
  eigenvalues, eigenvectors = jnp.linalg.eigh(cov)
  whiten = jnp.einsum("gik,gk,gjk->gij", eigenvectors, jax.lax.rsqrt(eigenvalues + eps), eigenvectors)
  white = jnp.einsum("ngi,gij->ngj", centred, whiten).reshape(n, d)
  return white[:, jnp.argsort(perm)]


def _scores(z1, z2, temperature, axis_name):
  """Cosine / tau of the local anchors z1 [n, D] against all N global z2 rows, and each anchor's own column."""
  z1, z2 = l2_normalize(z1), l2_normalize(z2)
  n = z1.shape[0]
  logits = z1 @ collectives.all_gather(z2, axis_name).T / temperature  # [n, N]
  own = collectives.axis_index(axis_name) * n + jnp.arange(n)
  return logits, own[:, None] == jnp.arange(logits.shape[1])[None, :]


def _global_mean(per_anchor, axis_name, pair_weights=None):
  if pair_weights is None:
    return collectives.pmean(jnp.mean(per_anchor), axis_name)
  total = collectives.psum(jnp.sum(pair_weights * per_anchor), axis_name)
  return total / jnp.maximum(collectives.psum(jnp.sum(pair_weights), axis_name), 1e-12)


def weighted_info_nce(
  z1: jax.Array,
  z2: jax.Array,
  negative_weights: jax.Array | None = None,
  pair_weights: jax.Array | None = None,
  *,
  temperature: float = 0.05,
  axis_name: str | None = None,
) -> jax.Array:
  """SimCSE's InfoNCE (Gao et al. 2021, eq. 1) with optionally weighted negatives and pairs.

  Args:
    z1, z2: [n, D] local embeddings; (z1_i, z2_i) is a positive pair, every other global z2_j a negative of z1_i.
    negative_weights: [n, N] weight w_ij >= 0 of negative j for local anchor i (N the global batch; column i's own
      entry is ignored); None: all 1, SimCSE itself. Zero removes a likely false negative (DCLR, Zhou et al. 2022).
    pair_weights: [n] weight of each anchor's term in the mean (0 drops a noisy pair); None: uniform.
    temperature: tau (SimCSE: 0.05).

  L_i = -s_ii + log(e^{s_ii} + sum_{j != i} w_ij e^{s_ij}), s = cos / tau; the loss is the (pair-weighted) mean
  over the global batch. The gradient treats the weights as constants.
  """
  check_pair("z1", z1, "z2", z2)
  check_positive("temperature", temperature)
  want = (z1.shape[0], z1.shape[0] * collectives.axis_size(axis_name))
  if negative_weights is not None and negative_weights.shape != want:
    raise ValueError(f"negative_weights must be [n, N] = {list(want)}, got {negative_weights.shape}")
  logits, own = _scores(z1, z2, temperature, axis_name)
  if negative_weights is None:
    log_w = jnp.zeros_like(logits)
  else:
    w = jax.lax.stop_gradient(negative_weights)
    log_w = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
  log_w = jnp.where(own, 0.0, log_w)
  positive = jnp.sum(jnp.where(own, logits, 0.0), axis=1)
  per_anchor = jax.nn.logsumexp(logits + log_w, axis=1) - positive
  if pair_weights is not None:
    pair_weights = jax.lax.stop_gradient(pair_weights)
  return _global_mean(per_anchor, axis_name, pair_weights)


def debiased_info_nce(
  z1: jax.Array, z2: jax.Array, *, temperature: float = 0.05, tau_plus: float = 0.1, axis_name: str | None = None
) -> jax.Array:
  """InfoNCE with the debiased negative term of Chuang et al. 2020 (eq. 7), on SimCSE's one-directional pairs.

  With M = N - 1 negatives, p_i = e^{s_ii} and the class prior tau_plus (the chance that a random negative is in
  fact a positive), the negative mass is estimated as
    Ng_i = max((sum_{j != i} e^{s_ij} - tau_plus M p_i) / (1 - tau_plus), M e^{-1 / tau}),
  and L_i = -log(p_i / (p_i + Ng_i)); tau_plus = 0 is `weighted_info_nce` without weights.
  """
  check_pair("z1", z1, "z2", z2)
  check_positive("temperature", temperature)
  if not 0.0 <= tau_plus < 1.0:
    raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
  logits, own = _scores(z1, z2, temperature, axis_name)
  shift = 1.0 / temperature  # cosines are <= 1: every e^{s - shift} <= 1
  e = jnp.exp(logits - shift)
  pos = jnp.sum(jnp.where(own, e, 0.0), axis=1)
  m = logits.shape[1] - 1
  neg = jnp.sum(jnp.where(own, 0.0, e), axis=1)
  ng = jnp.maximum((neg - tau_plus * m * pos) / (1.0 - tau_plus), m * jnp.exp(-1.0 / temperature - shift))
  return _global_mean(jnp.log(pos + ng) - jnp.log(pos), axis_name)


def reference_pair_weights(
  r1: jax.Array,
  r2: jax.Array,
  *,
  max_negative_similarity: float = 0.9,
  min_positive_similarity: float = -1.0,
  axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Refines pairs with a reference encoder's embeddings: (negative_weights [n, N], pair_weights [n]) in {0, 1}.

  r1, r2: [n, D] reference (frozen, e.g. the pretrained or a teacher model) embeddings of the same pairs. A
  negative whose reference cosine to the anchor exceeds `max_negative_similarity` is a likely false negative and
  is dropped (DCLR's instance weighting, Zhou et al. 2022, threshold 0.9); a pair whose reference cosine is below
  `min_positive_similarity` is a likely false positive and is dropped from the mean (MultiCSR-style filtering of
  noisy pairs). Feed both to `weighted_info_nce`.
  """
  check_pair("r1", r1, "r2", r2)
  cos, own = _scores(r1, r2, 1.0, axis_name)
  cos = jax.lax.stop_gradient(cos)
  negative_weights = jnp.where(own | (cos <= max_negative_similarity), 1.0, 0.0)
  pair_weights = (jnp.sum(jnp.where(own, cos, 0.0), axis=1) >= min_positive_similarity).astype(jnp.float32)
  return negative_weights, pair_weights

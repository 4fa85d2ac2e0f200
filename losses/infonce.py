"""InfoNCE family: NT-Xent (SimCLR / MoCo queue), DCL / DCLW, MV-InfoNCE, SupCon, MoCHi.

All take local [n, D] (or [V, n, D]) embeddings, L2-normalise them, and with `axis_name`
all-gather the candidates so that each device scores its own anchors against the global
batch; the returned value is the global mean, identical on every device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses import collectives
from losses.validation import check_embeddings, check_pair, check_positive


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along the last axis (torch.nn.functional.normalize)."""
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, eps)


class _Scores:
  """Cosine logits of the local anchors of V views against all views of the global batch.

  Anchors are the V*n local rows (view-major), candidates the V*N global rows (view-major);
  `same_sample[a, c]` marks candidates of the anchor's own sample, `is_self` the anchor itself.
  """

  def __init__(self, views: jax.Array, temperature, axis_name: str | None):
    v, n, d = views.shape
    views = l2_normalize(views)
    big_n = n * collectives.axis_size(axis_name)
    candidates = collectives.all_gather(views, axis_name, axis=1)  # [V, N, D]
    self.logits = views.reshape(v * n, d) @ candidates.reshape(v * big_n, d).T / temperature
    self.anchor_sample = collectives.axis_index(axis_name) * n + jnp.tile(jnp.arange(n), v)
    self.candidate_sample = jnp.tile(jnp.arange(big_n), v)
    anchor_view = jnp.repeat(jnp.arange(v), n)
    candidate_view = jnp.repeat(jnp.arange(v), big_n)
    self.same_sample = self.anchor_sample[:, None] == self.candidate_sample[None, :]
    self.is_self = self.same_sample & (anchor_view[:, None] == candidate_view[None, :])
    self.global_n = big_n

  def logsumexp(self, include: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(jnp.where(include, self.logits, -jnp.inf), axis=1)

  def sum(self, weights: jax.Array) -> jax.Array:
    """sum_c weights[a, c] * logits[a, c] per anchor (weights 0 where logits are excluded)."""
    return jnp.sum(jnp.where(weights != 0, weights * self.logits, 0.0), axis=1)


def _two_views(z1, z2):
  check_pair("z1", z1, "z2", z2)
  return jnp.stack([z1, z2])


def nt_xent(
  z1: jax.Array,
  z2: jax.Array,
  *,
  temperature: float = 0.5,
  queue: jax.Array | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  """Normalised-temperature cross entropy (SimCLR NT-Xent; MoCo InfoNCE with a queue).

  Args:
    z1, z2: [n, D] local embeddings of the two views; row i of each is a positive pair.
    temperature: tau > 0 (a Python float or a traced scalar, e.g. a learnable one).
    queue: optional [K, D] memory bank of negatives (MoCo / lightly `memory_bank_size`),
      replicated on every device; no gradient flows into it. Updating it is the caller's job.
    axis_name: mesh axis when called inside `jax.shard_map` on local shards.

  Without a queue, with u = [z1_all; z2_all] (2N rows, N the global batch) and
  s_ij = u_i . u_j / tau, the loss is the mean over the 2N anchors of
    -s_{i,p(i)} + log sum_{j != i} exp(s_ij),   p(i) = i +- N,
  i.e. 2N - 2 negatives per anchor (Chen et al. 2020, eq. 1; lightly NTXentLoss with
  memory_bank_size=0). With `axis_name`, negatives are all-gathered across devices.

  With a queue, anchors are z1 only, with one positive z2_i and the K queue entries as
  negatives: mean_i [-s(z1_i, z2_i) + log(exp s(z1_i, z2_i) + sum_k exp s(z1_i, q_k))]
  (He et al. 2020, eq. 1; lightly NTXentLoss with a memory bank). In-batch samples are not
  negatives in this case, so no gather is needed.

  Returns the global mean loss, the same scalar on every device.
  """
  views = _two_views(z1, z2)
  check_positive("temperature", temperature)
  if queue is not None:
    z1, z2 = l2_normalize(z1), l2_normalize(z2)
    negatives = _queue_negatives(queue, z1.shape[1])
    logits = jnp.concatenate([jnp.sum(z1 * z2, axis=-1, keepdims=True), z1 @ negatives.T], axis=1) / temperature
    return collectives.pmean(jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0]), axis_name)
  s = _Scores(views, temperature, axis_name)
  positive = s.same_sample & ~s.is_self
  local = jnp.mean(s.logsumexp(~s.is_self) - s.sum(positive))
  return collectives.pmean(local, axis_name)


def _queue_negatives(queue, dim):
  check_embeddings("queue", queue)
  if queue.shape[1] != dim:
    raise ValueError(f"queue must be [K, {dim}], got {queue.shape}")
  return jax.lax.stop_gradient(l2_normalize(queue))


def dcl(
  z1: jax.Array,
  z2: jax.Array,
  *,
  temperature: float = 0.1,
  weight_sigma: float | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  """Decoupled contrastive loss (Yeh et al. 2022): NT-Xent without the positive in the denominator.

  Args:
    z1, z2: [n, D] local embeddings of the two views (L2-normalised here).
    temperature: tau > 0.
    weight_sigma: None for DCL; sigma > 0 for DCLW, which weights each positive term by
      w_i = 2 - N softmax_i(z1_i . z2_i / sigma) over the global batch (no gradient).
    axis_name: mesh axis when called inside `jax.shard_map`.

  Per anchor i of the 2N, with positive p(i): -w_i s_{i,p(i)} + log sum_{j not in {i, p(i)}} e^{s_ij};
  the loss is the mean over all 2N anchors (= lightly DCLLoss / DCLWLoss on one device; on
  several, lightly softmaxes the DCLW weights per device, here over the global batch).
  """
  views = _two_views(z1, z2)
  check_positive("temperature", temperature)
  s = _Scores(views, temperature, axis_name)
  positive = s.same_sample & ~s.is_self
  weight = 1.0
  if weight_sigma is not None:
    check_positive("weight_sigma", weight_sigma)
    u1, u2 = l2_normalize(z1), l2_normalize(z2)
    pos_sim = jax.lax.stop_gradient(jnp.sum(u1 * u2, axis=-1)) / weight_sigma
    all_pos_sim = collectives.all_gather(pos_sim, axis_name)
    w = 2 - s.global_n * jnp.exp(pos_sim - jax.nn.logsumexp(all_pos_sim))
    weight = jnp.tile(w, 2)[:, None]
  local = jnp.mean(s.logsumexp(~s.same_sample) - s.sum(positive * weight))
  return collectives.pmean(local, axis_name)


def dclw(
  z1: jax.Array, z2: jax.Array, *, temperature: float = 0.1, sigma: float = 0.5, axis_name: str | None = None
) -> jax.Array:
  """DCL with von Mises-Fisher positive weights: `dcl(..., weight_sigma=sigma)` (lightly DCLWLoss)."""
  return dcl(z1, z2, temperature=temperature, weight_sigma=sigma, axis_name=axis_name)


def mv_info_nce(views: jax.Array, *, temperature: float = 0.5, axis_name: str | None = None) -> jax.Array:
  """Multi-view InfoNCE (Koromilas et al. 2025, "A Principled Framework for Multi-View CL").

  Args:
    views: [V, n, D] local embeddings, V >= 2 views of the same n samples.

  One term per sample i, all view pairs at once (reference code: MVINFONCE):
    L_i = -log [ sum_{l != m} e^{s(z_i^l, z_i^m)} / sum_l sum_{(j, m) != (i, l)} e^{s(z_i^l, z_j^m)} ],
  s = cosine / tau, averaged over the N samples of the global batch.
  """
  check_embeddings("views", views, ndim=3)
  if views.shape[0] < 2:
    raise ValueError(f"mv_info_nce needs >= 2 views, got views of shape {views.shape}")
  check_positive("temperature", temperature)
  v, n, _ = views.shape
  s = _Scores(views, temperature, axis_name)
  per_row_all = s.logsumexp(~s.is_self).reshape(v, n)
  per_row_pos = s.logsumexp(s.same_sample & ~s.is_self).reshape(v, n)
  local = jnp.mean(jax.nn.logsumexp(per_row_all, axis=0) - jax.nn.logsumexp(per_row_pos, axis=0))
  return collectives.pmean(local, axis_name)


def supcon(views: jax.Array, labels: jax.Array, *, temperature: float = 0.1, axis_name: str | None = None) -> jax.Array:
  """Supervised contrastive loss L_out (Khosla et al. 2020, eq. 2), hard or soft labels.

  Args:
    views: [V, n, D] local embeddings of V >= 1 views of n samples (L2-normalised here).
    labels: [n] integer classes, or [n, C] non-negative multi-label vectors (multi-hot).
    temperature: tau > 0.

  Every one of the V*N global embeddings is an anchor i, scored against all others
  A(i) = {a != i} with s = cosine / tau, against a target distribution t_i over A(i):
    L = mean_i [ -sum_{a in A(i)} t_ia (s_ia - log sum_{b in A(i)} e^{s_ib}) ].
  Integer labels: t_i is uniform on the positives P(i) = {p in A(i): y_p = y_i} (eq. 2).
  Multi-label: t_ia is proportional to the cosine overlap of the label vectors, 1 for the
  anchor's other views (soft targets from label overlap, as in SoftCon); one-hot labels
  give eq. 2 exactly. Anchors without any positive (possible with V = 1) are left out of
  the mean.
  """
  check_embeddings("views", views, ndim=3)
  check_positive("temperature", temperature)
  n = views.shape[1]
  if labels.ndim not in (1, 2) or labels.shape[0] != n:
    raise ValueError(f"labels must be [{n}] or [{n}, C] for views of shape {views.shape}, got {labels.shape}")
  s = _Scores(views, temperature, axis_name)
  all_labels = collectives.all_gather(labels, axis_name)
  anchor_labels = all_labels[s.anchor_sample]
  candidate_labels = all_labels[s.candidate_sample]
  if labels.ndim == 1:
    affinity = (anchor_labels[:, None] == candidate_labels[None, :]).astype(jnp.promote_types(views.dtype, jnp.float32))
  else:
    unit = l2_normalize(all_labels.astype(jnp.promote_types(views.dtype, jnp.float32)))
    affinity = jnp.where(s.same_sample, 1.0, unit[s.anchor_sample] @ unit[s.candidate_sample].T)
  affinity = jnp.where(s.is_self, 0.0, affinity)
  mass = jnp.sum(affinity, axis=1)
  has_positive = mass > 0
  targets = affinity / jnp.where(has_positive, mass, 1.0)[:, None]
  per_anchor = s.logsumexp(~s.is_self) - s.sum(targets)
  total = collectives.psum(jnp.sum(jnp.where(has_positive, per_anchor, 0.0)), axis_name)
  count = collectives.psum(jnp.sum(has_positive), axis_name)
  return total / jnp.maximum(count, 1)


def mochi(
  q: jax.Array,
  k: jax.Array,
  queue: jax.Array,
  rng: jax.Array,
  *,
  temperature: float = 0.2,
  num_hard: int = 1024,
  num_mixed: int = 256,
  num_query_mixed: int = 128,
  query_mix_max: float = 0.5,
  axis_name: str | None = None,
) -> jax.Array:
  """MoCo InfoNCE with hard negative mixing (MoCHi, Kalantidis et al. 2020).

  Args:
    q, k: [n, D] local queries and their positive keys; queue: [K, D] negatives (replicated).
    rng: a key, the same on every device (each global row draws its own mixing).
    num_hard: N, the hardest queue negatives per query (by q . n) that get mixed.
    num_mixed: s, negatives h = normalise(a n_i + (1 - a) n_j), a ~ U(0, 1), n_i, n_j from the N.
    num_query_mixed: s', negatives h' = normalise(b q + (1 - b) n_j), b ~ U(0, query_mix_max).

  The loss is `nt_xent(q, k, queue=queue)` with the s + s' synthetic negatives appended to
  each query's logits. Synthetic negatives carry no gradient (as the queue).
  """
  check_pair("q", q, "k", k)
  check_positive("temperature", temperature)
  negatives = _queue_negatives(queue, q.shape[1])
  if not 1 <= num_hard <= negatives.shape[0]:
    raise ValueError(f"num_hard must be in [1, K={negatives.shape[0]}], got {num_hard}")
  q, k = l2_normalize(q), l2_normalize(k)
  n = q.shape[0]
  queue_logits = q @ negatives.T
  hardest = jax.lax.top_k(jax.lax.stop_gradient(queue_logits), num_hard)[1]  # [n, N]

  # Draw for the whole global batch and keep this device's rows: same draws on any mesh.
  global_n = n * collectives.axis_size(axis_name)
  rows = collectives.axis_index(axis_name) * n + jnp.arange(n)
  k_i, k_j, k_a, k_qj, k_b = jax.random.split(rng, 5)
  pick = lambda key, m: jax.random.randint(key, (global_n, m), 0, num_hard)[rows]
  mix = lambda key, m, hi: jax.random.uniform(key, (global_n, m, 1), maxval=hi)[rows]
  hard = lambda idx: negatives[jnp.take_along_axis(hardest, idx, axis=1)]  # [n, m, D]
  alpha = mix(k_a, num_mixed, 1.0)
  mixed = alpha * hard(pick(k_i, num_mixed)) + (1 - alpha) * hard(pick(k_j, num_mixed))
  beta = mix(k_b, num_query_mixed, query_mix_max)
  query_mixed = beta * jax.lax.stop_gradient(q)[:, None] + (1 - beta) * hard(pick(k_qj, num_query_mixed))
  synthetic = jax.lax.stop_gradient(l2_normalize(jnp.concatenate([mixed, query_mixed], axis=1)))

  logits = (
    jnp.concatenate(
      [jnp.sum(q * k, axis=-1, keepdims=True), queue_logits, jnp.einsum("nd,nmd->nm", q, synthetic)], axis=1
    )
    / temperature
  )
  return collectives.pmean(jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0]), axis_name)

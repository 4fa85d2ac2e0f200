"""SwAV: swapped prediction of Sinkhorn-Knopp codes, multi-crop."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from losses import collectives
from losses.validation import check_positive


def sinkhorn(
  scores: jax.Array, *, iterations: int = 3, epsilon: float = 0.05, axis_name: str | None = None
) -> jax.Array:
  """Equipartitioned soft codes (Caron et al. 2020, alg. 1; lightly `sinkhorn`), no gradient.

  Args:
    scores: [n, K] local prototype scores. epsilon: entropic regularisation.
    iterations: Sinkhorn-Knopp steps.

  Q = exp(scores / epsilon)^T [K, B] over the global batch B, alternately normalised to
  uniform row sums (prototypes) and column sums (samples); returns B Q^T, i.e. [n, K] codes
  whose rows sum to 1. Computed in the log domain; the per-prototype sums are
  psum-reduced over `axis_name`.
  """
  check_positive("epsilon", epsilon)
  # In the log domain, so that scores / epsilon far apart cannot underflow a whole column.
  log_q = jax.lax.stop_gradient(scores).astype(jnp.promote_types(scores.dtype, jnp.float32)) / epsilon  # [n, K]

  def step(_, log_q):
    # Per prototype over the global batch, then per sample over the prototypes.
    shift = collectives.pmax(jnp.max(log_q, axis=0), axis_name)
    log_q = log_q - (shift + jnp.log(collectives.psum(jnp.sum(jnp.exp(log_q - shift), axis=0), axis_name)))
    return log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True)

  # A loop, not unrolled: compile time stays flat in `iterations`.
  return jnp.exp(jax.lax.fori_loop(0, iterations, step, log_q))


def _as_crops(name, crops):
  crops = [jnp.asarray(c) for c in crops]
  if any(c.ndim != 2 or c.shape != crops[0].shape for c in crops):
    raise ValueError(f"{name} must be [n, K] crops of one shape, got {[c.shape for c in crops]}")
  return crops


def swav(
  high_res: Sequence[jax.Array],
  low_res: Sequence[jax.Array] = (),
  *,
  temperature: float = 0.1,
  sinkhorn_iterations: int = 3,
  sinkhorn_epsilon: float = 0.05,
  queue: Sequence[jax.Array] | None = None,
  axis_name: str | None = None,
) -> jax.Array:
  """SwAV swapped-prediction loss with multi-crop (Caron et al. 2020; lightly SwaVLoss).

  Args:
    high_res: H >= 1 local [n, K] prototype scores of the large crops (or an [H, n, K] array).
    low_res: L local [n, K] scores of the small crops; they never produce codes.
    temperature: softmax temperature of the predictions.
    queue: optional H arrays [m, K]: scores of queued earlier samples, one per large crop.
      Each device holds its own part, as in SwAV, so with `axis_name` the global queue is
      the concatenation of the local ones. They sharpen the codes and then are dropped.

  Codes q_i = sinkhorn(high_res[i]) (stop-gradient) are predicted by every other crop v:
    L = 1/H sum_i 1/(H + L - 1) sum_{v != i} mean_n [ -sum_k q_i log softmax(z_v / tau) ].
  """
  high_res = _as_crops("high_res", high_res)
  low_res = _as_crops("low_res", list(low_res)) if len(low_res) else []
  if low_res and low_res[0].shape != high_res[0].shape:
    raise ValueError(f"low_res crops {low_res[0].shape} must match high_res crops {high_res[0].shape}")
  if len(high_res) + len(low_res) < 2:
    raise ValueError("swav needs at least two crops in total")
  if queue is not None and len(queue) != len(high_res):
    raise ValueError(f"queue must hold one array per high-resolution crop ({len(high_res)}), got {len(queue)}")
  check_positive("temperature", temperature)
  n = high_res[0].shape[0]
  log_probs = [jax.nn.log_softmax(z / temperature, axis=1) for z in high_res + low_res]
  loss = 0.0
  for i, scores in enumerate(high_res):
    if queue is not None:
      scores = jnp.concatenate([scores, queue[i]])
    codes = sinkhorn(scores, iterations=sinkhorn_iterations, epsilon=sinkhorn_epsilon, axis_name=axis_name)[:n]
    cross = [-jnp.mean(jnp.sum(codes * lp, axis=1)) for v, lp in enumerate(log_probs) if v != i]
    loss = loss + sum(cross) / (len(log_probs) - 1)
  return collectives.pmean(loss / len(high_res), axis_name)

"""Temperatures: a learnable (log-parametrised, clipped) one, and per-sample ones (iSogCLR)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from losses import collectives
from losses.infonce import l2_normalize
from losses.validation import check_pair, check_positive


def learnable_temperature(
  log_temperature: jax.Array, *, min_temperature: float = 0.01, max_temperature: float = 1.0
) -> jax.Array:
  """tau = exp(clip(log_tau, log min, log max)); the gradient is zero outside the range.

  Keep `log_temperature` as the parameter (init log(tau0)). CLIP's logit scale is 1 / tau:
  its clamp of the scale at 100 is min_temperature=0.01.
  """
  check_positive("min_temperature", min_temperature)
  if not max_temperature > min_temperature:
    raise ValueError(f"need max_temperature > min_temperature, got {max_temperature} <= {min_temperature}")
  return jnp.exp(jnp.clip(log_temperature, math.log(min_temperature), math.log(max_temperature)))


def isogclr_init_state(n: int) -> dict[str, jax.Array]:
  """Per-sample iSogCLR state for n samples (rows of a dataset-sized table): all zeros."""
  zeros = jnp.zeros((n,), jnp.float32)
  return {"s_x": zeros, "s_y": zeros, "b_x": zeros, "b_y": zeros}


def isogclr(
  x: jax.Array,
  y: jax.Array,
  tau_x: jax.Array,
  tau_y: jax.Array,
  state: dict[str, jax.Array],
  *,
  gamma: float = 0.8,
  rho: float = 8.0,
  eps: float = 1e-14,
  axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Robust contrastive loss with individualised temperatures (iSogCLR, Qiu et al. 2023).

  Args:
    x, y: [n, D] local embeddings of paired samples (two views, or image and text);
      L2-normalised here.
    tau_x, tau_y: [n] positive per-sample temperatures of the anchors x_i and y_i (rows of
      a dataset-sized table, or a temperature network's output).
    state: the samples' rows of the moving-average state, {"s_x", "s_y", "b_x", "b_y"}
      [n] each (`isogclr_init_state`); s = 0 marks a sample not seen yet.
    gamma: moving-average rate of the inner estimate; rho: the KL-DRO radius.

  For anchor x_i with global negatives y_j (j != i), d_ij = x_i . y_j - x_i . y_i and
  a_ij = d_ij / tau_i (no gradient). The inner function g_i = sum_j exp(a_ij - b_i) is
  tracked by s_i <- (1 - gamma) s_i e^{b_i - b_i'} + gamma g_i with the running shift b_i'.
  Returns (loss, new_state), where
    loss = mean_i sum_j w_ij d_ij + mean_i tau_i [log(s_i / (N - 1)) + b_i + rho - sum_j w_ij a_ij]
  with w_ij = exp(a_ij - b_i) / s_i, plus the same for the y anchors. Its gradient w.r.t. the
  encoder is the iSogCLR estimator; its gradient w.r.t. tau_i is that of the DRO objective
  tau_i (log E_j exp(d_ij / tau_i) + rho) with the same estimates (reference: the authors'
  iSogCLR_TempNet_Loss), so any optimiser or temperature network can follow it.
  """
  check_pair("x", x, "y", y)
  for name, t in (("tau_x", tau_x), ("tau_y", tau_y)):
    if t.shape != x.shape[:1]:
      raise ValueError(f"{name} must be [{x.shape[0]}], got {t.shape}")
  for key in ("s_x", "s_y", "b_x", "b_y"):
    if state[key].shape != x.shape[:1]:
      raise ValueError(f"state[{key!r}] must be [{x.shape[0]}], got {state[key].shape}")
  x, y = l2_normalize(x), l2_normalize(y)
  n = x.shape[0]
  big_n = n * collectives.axis_size(axis_name)
  rows = collectives.axis_index(axis_name) * n + jnp.arange(n)
  negative = rows[:, None] != jnp.arange(big_n)[None, :]

  def one_side(anchors, others, tau, s_old, b_old):
    sim = anchors @ collectives.all_gather(others, axis_name).T  # [n, N]
    d = sim - jnp.sum(anchors * others, axis=1, keepdims=True)
    a = jax.lax.stop_gradient(d / tau[:, None])
    b = jnp.maximum(b_old, jnp.max(a, axis=1))
    e = jnp.exp(a - b[:, None]) * negative
    g = jnp.sum(e, axis=1)
    s = jnp.where(s_old > 0, (1 - gamma) * s_old * jnp.exp(b_old - b) + gamma * g, g)
    w = e / jnp.maximum(s, eps)[:, None]
    contrastive = jnp.sum(w * d, axis=1)
    tau_grad = jnp.log(jnp.maximum(s, eps) / (big_n - 1)) + b + rho - jnp.sum(w * a, axis=1)
    per_anchor = contrastive + jax.lax.stop_gradient(tau_grad) * tau
    return collectives.pmean(jnp.mean(per_anchor), axis_name), s, b

  loss_x, s_x, b_x = one_side(x, y, tau_x, state["s_x"], state["b_x"])
  loss_y, s_y, b_y = one_side(y, x, tau_y, state["s_y"], state["b_y"])
  new_state = jax.lax.stop_gradient({"s_x": s_x, "s_y": s_y, "b_x": b_x, "b_y": b_y})
  return loss_x + loss_y, new_state

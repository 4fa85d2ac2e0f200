"""Generative term for hybrid objectives: token-level cross entropy with a padding mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from losses import collectives


def token_cross_entropy(
  logits: jax.Array,
  targets: jax.Array,
  mask: jax.Array | None = None,
  *,
  label_smoothing: float = 0.0,
  axis_name: str | None = None,
) -> jax.Array:
  """Mean next-token (captioning) or reconstruction cross entropy over real tokens.

  Args:
    logits: [n, T, V] local predictions; targets: [n, T] integer tokens.
    mask: [n, T], 1 for real tokens and 0 for padding (default: all real).
    label_smoothing: epsilon of uniform label smoothing (CoCa uses 0.1).

  L = sum_{b,t} m_bt CE(logits_bt, y_bt) / sum_{b,t} m_bt over the global batch, so every
  real token weighs the same whatever its sequence length or device.
  """
  if logits.ndim != 3 or targets.shape != logits.shape[:2]:
    raise ValueError(f"logits must be [n, T, V] and targets [n, T], got {logits.shape} and {targets.shape}")
  if mask is None:
    mask = jnp.ones(targets.shape, jnp.float32)
  if mask.shape != targets.shape:
    raise ValueError(f"mask must have the shape of targets {targets.shape}, got {mask.shape}")
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
  vocab = logits.shape[-1]
  labels = optax.smooth_labels(jax.nn.one_hot(targets, vocab), label_smoothing)
  ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
  mask = mask.astype(jnp.float32)
  total = collectives.psum(jnp.sum(ce * mask), axis_name)
  count = collectives.psum(jnp.sum(mask), axis_name)
  return total / jnp.maximum(count, 1.0)

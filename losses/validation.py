"""Trace-time argument checks shared by the losses; each raises ValueError with the shapes."""

from __future__ import annotations

import jax


def concrete_float(x) -> float | None:
  """`x` as a Python float when its value is known at trace time, else None."""
  try:
    return float(x)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def check_positive(name: str, value) -> None:
  """Rejects a known value <= 0 (traced values, e.g. a learnable temperature, pass)."""
  v = concrete_float(value)
  if v is not None and not v > 0:
    raise ValueError(f"{name} must be > 0, got {v}")


def check_embeddings(name: str, x, ndim: int = 2) -> None:
  if getattr(x, "ndim", None) != ndim:
    raise ValueError(f"{name} must have {ndim} dims, got shape {getattr(x, 'shape', None)}")


def check_pair(a_name: str, a, b_name: str, b) -> None:
  """Two [n, D] embeddings of the same pairs."""
  check_embeddings(a_name, a)
  check_embeddings(b_name, b)
  if a.shape != b.shape:
    raise ValueError(f"{a_name} and {b_name} must have the same shape, got {a.shape} and {b.shape}")

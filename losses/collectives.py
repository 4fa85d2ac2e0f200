"""Cross-device collectives for losses, each a no-op when `axis_name` is None.

Losses receive the *local* shard of a batch and an optional mesh axis name; they are
called inside `jax.shard_map` over that axis. These helpers let one loss body run on one
device or many: with `axis_name=None` they reduce to the single-device computation.

Gradients: `all_gather` transposes to a reduce-scatter, so gathering negatives and then
averaging the local losses with `pmean` gives every device the exact gradient of the
global loss with respect to its local inputs (with `check_vma=True`, the default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def axis_size(axis_name: str | None) -> int:
  """Number of devices along `axis_name` (1 without an axis)."""
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def axis_index(axis_name: str | None) -> jax.Array:
  """This device's position along `axis_name` (0 without an axis)."""
  return jnp.int32(0) if axis_name is None else jax.lax.axis_index(axis_name)


def all_gather(x: jax.Array, axis_name: str | None, axis: int = 0) -> jax.Array:
  """Concatenates the shards of `x` along `axis` in device order: [n, ...] -> [W*n, ...]."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, axis=axis, tiled=True)


def psum(x, axis_name: str | None):
  """Sum over devices (identity without an axis)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmean(x, axis_name: str | None):
  """Mean over devices (identity without an axis)."""
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def pmax(x, axis_name: str | None):
  """Max over devices (identity without an axis), without gradient (for shifts)."""
  x = jax.lax.stop_gradient(x)
  return x if axis_name is None else jax.lax.pmax(x, axis_name)


def psum_scatter(x: jax.Array, axis_name: str | None) -> jax.Array:
  """Sums `x` [W*n, ...] over devices and keeps this device's [n, ...] block."""
  return x if axis_name is None else jax.lax.psum_scatter(x, axis_name, scatter_dimension=0, tiled=True)


def ring_shift(x, axis_name: str | None):
  """Sends `x` to the previous device on the ring: device r receives from r + 1."""
  if axis_name is None:
    return x
  w = jax.lax.axis_size(axis_name)
  return jax.lax.ppermute(x, axis_name, perm=[(i, (i - 1) % w) for i in range(w)])

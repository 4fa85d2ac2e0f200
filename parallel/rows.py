"""Per-example tables split by row over the devices: rows of a batch gathered from, and written back to, the shards.

A table of T rows (one per dataset example, e.g. iSogCLR's temperatures) lives on the batch axes as the partition
rule "rows" lays it out: device d holds rows [d T/W, (d + 1) T/W). Inside `jax.shard_map` over those axes each device
has its n batch examples' ids; `gather_rows` brings their rows from whichever device holds them, `scatter_rows`
writes new rows back. Memory stays O(T / W) per device; communication is O(global batch) per step (the ids and rows
of the batch are all-gathered; no table row moves). Values are moved, never summed with other values, so the result
is bit-identical on any number of devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

AxisName = str | tuple[str, ...] | None


def padded_size(num_rows: int, num_shards: int) -> int:
  """The table length: num_rows rounded up to a multiple of the batch shard count."""
  return -(-num_rows // num_shards) * num_shards


def _gather(x: jax.Array, axis_name: AxisName) -> jax.Array:
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _local_rows(table: jax.Array, all_ids: jax.Array, axis_name: AxisName) -> tuple[jax.Array, jax.Array]:
  """(position of each global id in this device's shard, whether this device holds it)."""
  size = table.shape[0]
  start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * size
  local = all_ids - start
  return local, (local >= 0) & (local < size)


def gather_rows(tables, ids: jax.Array, axis_name: AxisName = None):
  """Rows `ids` of every table of a pytree: tables' leaves [T/W, ...] (this device's shard), ids int [n] (this
  device's examples) -> leaves [n, ...]. Ids outside [0, T) read zeros."""
  all_ids = _gather(ids, axis_name)

  def one(table):
    local, mine = _local_rows(table, all_ids, axis_name)
    mask = mine.reshape(mine.shape + (1,) * (table.ndim - 1))
    rows = jnp.where(mask, table[jnp.clip(local, 0, table.shape[0] - 1)], jnp.zeros((), table.dtype))
    # Exactly one device holds each row; the others add zeros: the sum is the row, bit for bit.
    return rows if axis_name is None else jax.lax.psum_scatter(rows, axis_name, scatter_dimension=0, tiled=True)

  return jax.tree.map(one, tables)


def _first_occurrence(ids: jax.Array) -> jax.Array:
  """bool [N]: True at the first position of each distinct id (a batch may hold an example twice across epochs)."""
  order = jnp.argsort(ids, stable=True)
  sorted_ids = ids[order]
  repeated = jnp.concatenate([jnp.zeros((1,), bool), sorted_ids[1:] == sorted_ids[:-1]])
  return jnp.zeros(ids.shape, bool).at[order].set(~repeated)


def scatter_rows(tables, ids: jax.Array, rows, axis_name: AxisName = None):
  """Tables (pytree of shards [T/W, ...]) with rows `ids` [n] set to `rows` (leaves [n, ...]); an id that occurs
  several times in the global batch takes the rows of its first occurrence, ids outside [0, T) are dropped."""
  all_ids = _gather(ids, axis_name)
  first = _first_occurrence(all_ids)

  def one(table, new):
    local, mine = _local_rows(table, all_ids, axis_name)
    target = jnp.where(mine & first, local, table.shape[0])  # out of range: dropped
    return table.at[target].set(_gather(new.astype(table.dtype), axis_name), mode="drop")

  return jax.tree.map(one, tables, rows)

"""Sharding of parameters and optimizer state by regex rules on parameter names (big_vision style)."""

from __future__ import annotations

import re
from typing import Any
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from parallel import mesh as mesh_lib

# Per-example tables of method state are split by row over the batch axes, like the examples themselves. FSDP (ZeRO-3
# style) for every other large array: parameters, optimizer moments and EMA are split over the `fsdp` axis (replicated
# when it has size 1), small ones (biases, norms, scalars) stay replicated.
DEFAULT_RULES = ((r"extra/example_state/", "rows"), (".*", "fsdp"))


def _path_name(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def fsdp_spec(shape: Sequence[int], mesh: Mesh, axis: str = "fsdp", min_size: int = 2**14) -> P:
  """Splits the largest dimension divisible by the fsdp axis size; small or indivisible arrays stay replicated."""
  n = mesh.shape.get(axis, 1)
  if n == 1 or int(np.prod(shape)) < min_size:
    return P()
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = axis
      return P(*spec)
  return P()


def infer_shardings(
  tree: Any, mesh: Mesh, rules: Sequence[tuple[str, str]] = DEFAULT_RULES, fsdp_min_size: int = 2**14
) -> Any:
  """Maps each leaf of an (abstract) pytree to a NamedSharding by the first rule whose regex matches its path.

  Paths are "/"-joined keys of the whole TrainState, e.g. "params/backbone/encoder/block0/mlp/fc1/kernel" or
  "opt_state/1/0/mu/backbone/...". A rule's action is "replicate" or "fsdp" (split the largest divisible dimension
  over the `fsdp` axis; arrays of fewer than `fsdp_min_size` elements stay replicated).
  """
  compiled = [(re.compile(pattern), action) for pattern, action in rules]

  def leaf_sharding(path, leaf):
    name = _path_name(path)
    shape = getattr(leaf, "shape", ())
    for pattern, action in compiled:
      if pattern.fullmatch(name) or pattern.search(name):
        if action == "replicate":
          return NamedSharding(mesh, P())
        if action == "fsdp":
          return NamedSharding(mesh, fsdp_spec(shape, mesh, min_size=fsdp_min_size))
        if action == "rows":
          if not shape or shape[0] % mesh_lib.num_batch_shards(mesh):
            raise ValueError(
              f"{name} {tuple(shape)}: a 'rows' table needs a leading dimension divisible by the "
              f"{mesh_lib.num_batch_shards(mesh)} batch shards (pad it with parallel.rows.padded_size)."
            )
          return NamedSharding(mesh, mesh_lib.batch_spec(mesh))
        raise ValueError(f"Unknown partition action {action!r} in rule {pattern.pattern!r}.")
    raise ValueError(f"No partition rule matches parameter {name!r}; add a catch-all rule ('.*', 'replicate').")

  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def bytes_per_device(tree: Any, shardings: Any) -> int:
  """Bytes of an (abstract) pytree that one device holds under `shardings` (the largest shard of each leaf)."""

  def leaf_bytes(leaf, sharding):
    return int(np.prod(sharding.shard_shape(leaf.shape))) * np.dtype(leaf.dtype).itemsize

  return sum(jax.tree.leaves(jax.tree.map(leaf_bytes, tree, shardings)))

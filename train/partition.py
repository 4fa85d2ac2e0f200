"""Sharding of parameters and optimizer state by regex rules on parameter names (big_vision style)."""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


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


def infer_shardings(tree: Any, mesh: Mesh, rules: Sequence[tuple[str, str]] = ((".*", "replicate"),)) -> Any:
  """Maps each leaf of an (abstract) pytree to a NamedSharding by the first rule whose regex matches its path.

  A rule's action is "replicate" or "fsdp" (split the largest divisible dimension over the `fsdp` axis).
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
          return NamedSharding(mesh, fsdp_spec(shape, mesh))
        raise ValueError(f"Unknown partition action {action!r} in rule {pattern.pattern!r}.")
    raise ValueError(f"No partition rule matches parameter {name!r}; add a catch-all rule ('.*', 'replicate').")

  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)

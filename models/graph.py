"""Graph Isomorphism Network encoder (Xu et al. 2019) on padded dense graphs, as used by GraphCL (You et al. 2020)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register


@register("gin")
class GIN(nn.Module):
  """`__call__(x [B, N, F], adj [B, N, N], node_mask [B, N], *, train) -> [B, depth * width]` float32.

  Graphs are padded to N nodes: `adj` is the 0/1 (or weighted) adjacency without self-loops, `node_mask` marks the
  real nodes; padded nodes neither send nor receive messages and are left out of the readout. Layer l:
    h^l_v = MLP_l((1 + eps_l) h^{l-1}_v + sum_{u in N(v)} h^{l-1}_u),  MLP = Dense -> ReLU -> Dense -> ReLU,
  eps_l learnable (GIN-eps). Graph embedding: the concatenation over layers of the sum of h^l over real nodes
  (Xu et al. 2019, eq. 4.2; GraphCL's unsupervised TU encoder: width 32, depth 3 to 5). With `return_nodes=True`
  returns `(pooled, node features of the last layer [B, N, width])`.
  """

  width: int = 32
  depth: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, adj, node_mask, *, train: bool, return_nodes: bool = False):
    del train  # no dropout or batch norm: padded nodes would bias batch statistics
    mask = jnp.asarray(node_mask, self.dtype)[..., None]
    adj = jnp.asarray(adj, self.dtype) * mask * jnp.swapaxes(mask, 1, 2)
    h = jnp.asarray(x, self.dtype) * mask
    readouts = []
    for i in range(self.depth):
      eps = self.param(f"eps{i}", nn.initializers.zeros, (), jnp.float32)
      h = (1 + eps.astype(self.dtype)) * h + jnp.einsum("bvu,buf->bvf", adj, h)
      h = nn.relu(nn.Dense(self.width, dtype=self.dtype, name=f"layer{i}_fc0")(h))
      h = nn.relu(nn.Dense(self.width, dtype=self.dtype, name=f"layer{i}_fc1")(h)) * mask
      readouts.append(jnp.sum(h, axis=1))
    pooled = jnp.concatenate(readouts, axis=-1).astype(jnp.float32)
    return (pooled, h.astype(jnp.float32)) if return_nodes else pooled

"""Image-text contrastive losses: CLIP softmax and SigLIP sigmoid, dense / chunked / ring.

Both follow open_clip's conventions: embeddings are used as given (normalise them in the
model), `logit_scale` is the already-exponentiated multiplier (e.g. exp(log_scale) clipped
at 100), and the value is the global one over all N pairs of all devices. `mode` picks how
the N x N logits are covered (see `losses.blockwise`); all modes give the same value and
gradients, including those of `logit_scale` and `logit_bias`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses import collectives
from losses.blockwise import pairwise_reduce
from losses.validation import check_pair, check_positive


def clip_softmax_loss(
  image_emb: jax.Array,
  text_emb: jax.Array,
  logit_scale: float | jax.Array,
  *,
  mode: str = "dense",
  chunk_size: int | None = 256,
  axis_name: str | None = None,
) -> jax.Array:
  """Symmetric InfoNCE of CLIP (Radford et al. 2021; open_clip ClipLoss).

  Args:
    image_emb, text_emb: [n, D] local embeddings; row i of each is a matching pair.
    logit_scale: t > 0 multiplying the dot products (not its logarithm).
    mode: "dense" (all-gather, full [n, N] logits), "chunked" or "ring" (see
      `losses.blockwise`: [n, chunk_size] logit blocks, custom VJP, O(n D) extra memory).
    chunk_size: logit block width for chunked / ring; None = one block per device shard.
    axis_name: mesh axis when called inside `jax.shard_map` on local shards.

  With s_ij = t x_i . y_j over the global batch of N pairs,
    L = 1/(2N) sum_i [ (log sum_j e^{s_ij} - s_ii) + (log sum_j e^{s_ji} - s_ii) ].
  """
  check_pair("image_emb", image_emb, "text_emb", text_emb)
  check_positive("logit_scale", logit_scale)
  image_to_text, text_to_image = pairwise_reduce(
    image_emb,
    text_emb,
    logit_scale,
    reduction="logsumexp",
    symmetric=True,
    mode=mode,
    chunk_size=chunk_size,
    axis_name=axis_name,
  )
  positives = logit_scale * jnp.sum(image_emb * text_emb, axis=1, dtype=jnp.promote_types(image_emb.dtype, jnp.float32))
  local = jnp.sum(image_to_text + text_to_image - 2 * positives)
  global_n = image_emb.shape[0] * collectives.axis_size(axis_name)
  return collectives.psum(local, axis_name) / (2 * global_n)


def siglip_loss(
  image_emb: jax.Array,
  text_emb: jax.Array,
  logit_scale: float | jax.Array,
  logit_bias: float | jax.Array,
  *,
  mode: str = "dense",
  chunk_size: int | None = 256,
  axis_name: str | None = None,
) -> jax.Array:
  """Pairwise sigmoid loss of SigLIP (Zhai et al. 2023, alg. 1; open_clip SigLipLoss).

  Args:
    image_emb, text_emb, mode, chunk_size, axis_name: as in `clip_softmax_loss`.
    logit_scale: t > 0 (not its logarithm); logit_bias: b (SigLIP initialises -10).

  With z_ij = t x_i . y_j + b and labels y_ij = +1 if i == j else -1 over the global batch,
    L = -1/N sum_{i,j} log sigmoid(y_ij z_ij) = 1/N [ sum_{i,j} softplus(z_ij) - sum_i z_ii ].
  """
  check_pair("image_emb", image_emb, "text_emb", text_emb)
  check_positive("logit_scale", logit_scale)
  all_pairs = pairwise_reduce(
    image_emb,
    text_emb,
    logit_scale,
    logit_bias,
    reduction="softplus",
    mode=mode,
    chunk_size=chunk_size,
    axis_name=axis_name,
  )
  positives = (
    logit_scale * jnp.sum(image_emb * text_emb, axis=1, dtype=jnp.promote_types(image_emb.dtype, jnp.float32))
    + logit_bias
  )
  local = jnp.sum(all_pairs - positives)
  global_n = image_emb.shape[0] * collectives.axis_size(axis_name)
  return collectives.psum(local, axis_name) / global_n

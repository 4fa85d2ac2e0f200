"""Dense (pixel-level) contrast: PixPro's pixel-propagation consistency and PixContrast / DenseCL InfoNCE.

Feature maps enter flattened, [n, P, D] with P = h * w pixels in row-major order. Which pixels of the two views are
positives is a mask [n, P1, P2]: from the crop boxes (`crop_pixel_distance(...) < threshold`, PixPro) or from the
feature similarity itself (`nearest_feature_match`, DenseCL).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from losses import collectives
from losses.infonce import l2_normalize
from losses.validation import check_embeddings, check_positive


def _pixel_centres(box: jax.Array, size: Sequence[int]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Original-image (y, x) [..., h * w] of the feature-map pixel centres of crop `box`, and the bin diagonal [...]."""
  h, w = size
  box = jnp.asarray(box, float)  # float32, or float64 under jax.enable_x64
  y0, x0, box_h, box_w = (box[..., k, None] for k in range(4))
  bin_h, bin_w = box_h / h, box_w / w
  rows = jnp.repeat(jnp.arange(h, dtype=box.dtype), w)
  cols = jnp.tile(jnp.arange(w, dtype=box.dtype), h)
  return y0 + (rows + 0.5) * bin_h, x0 + (cols + 0.5) * bin_w, jnp.hypot(bin_h, bin_w)[..., 0]


def crop_pixel_distance(box1: jax.Array, box2: jax.Array, size1: Sequence[int], size2: Sequence[int]) -> jax.Array:
  """Distances between the feature-map pixels of two crops of one image, in units of a feature-map bin.

  Args:
    box1, box2: [..., 4] crops (y0, x0, h, w) in original-image pixels: output pixel (r, c) of an out_h x out_w view
      samples the original point (y0 + (r + 0.5) h / out_h, x0 + (c + 0.5) w / out_w). A horizontally flipped view
      has x0 at the crop's right edge and w < 0 (as `input_pipeline.augment_dense.boxed_views` returns them).
    size1, size2: (h, w) of the two feature maps.

  Returns [..., h1 * w1, h2 * w2]: the Euclidean distance of the two pixel centres in the original image divided by
  the larger of the two bin diagonals (PixPro, Xie et al. 2021, Sec. 3.1: positives are pixels closer than T = 0.7).
  """
  y1, x1, diag1 = _pixel_centres(box1, size1)
  y2, x2, diag2 = _pixel_centres(box2, size2)
  dist = jnp.hypot(y1[..., :, None] - y2[..., None, :], x1[..., :, None] - x2[..., None, :])
  return dist / jnp.maximum(diag1, diag2)[..., None, None]


def nearest_feature_match(f1: jax.Array, f2: jax.Array) -> jax.Array:
  """DenseCL correspondence (Wang et al. 2021, eq. 3): pixel i of view 1 matches argmax_j cos(f1_i, f2_j).

  f1: [n, P1, C], f2: [n, P2, C] backbone feature maps -> one-hot float [n, P1, P2] (no gradient).
  """
  sim = jnp.einsum("npc,nqc->npq", l2_normalize(f1), l2_normalize(f2))
  return jax.lax.stop_gradient(jax.nn.one_hot(jnp.argmax(sim, axis=-1), f2.shape[1], dtype=f1.dtype))


def _check_maps(p1, p2, positive):
  check_embeddings("p1", p1, ndim=3)
  check_embeddings("p2", p2, ndim=3)
  want = (p1.shape[0], p1.shape[1], p2.shape[1])
  if p1.shape[0] != p2.shape[0] or p1.shape[2] != p2.shape[2] or positive.shape != want:
    raise ValueError(
      f"need p1 [n, P1, D], p2 [n, P2, D], positive {list(want)}; got {p1.shape}, {p2.shape}, {positive.shape}"
    )


def pixpro(
  p1: jax.Array,
  p2: jax.Array,
  t1: jax.Array,
  t2: jax.Array,
  positive: jax.Array,
  *,
  axis_name: str | None = None,
) -> jax.Array:
  """PixPro pixel-to-propagation consistency (Xie et al. 2021, eq. 4), both directions.

  Args:
    p1, p2: [n, P1, D], [n, P2, D] propagated pixel features y of the online branch (after the PPM).
    t1, t2: [n, P1, D], [n, P2, D] target pixel features x' of the momentum branch (no gradient flows into them).
    positive: [n, P1, P2] positive-pair weights of view-1 pixel i and view-2 pixel j (bool or float).

  Per image, L_12 = -2 sum_ij m_ij cos(p1_i, t2_j) / (sum_ij m_ij + 1e-6), and L_21 the same with the views swapped
  (m transposed); the loss is the mean over the global batch of L_12 + L_21 (reference: PixPro's regression_loss).
  An image whose views do not overlap contributes 0.
  """
  _check_maps(p1, p2, positive)
  m = positive.astype(jnp.float32)
  t1, t2 = jax.lax.stop_gradient(l2_normalize(t1)), jax.lax.stop_gradient(l2_normalize(t2))
  p1, p2 = l2_normalize(p1), l2_normalize(p2)

  def one_way(p, t, mask):
    cos = jnp.einsum("npd,nqd->npq", p, t)
    return -2 * jnp.sum(cos * mask, axis=(1, 2)) / (jnp.sum(mask, axis=(1, 2)) + 1e-6)

  local = jnp.mean(one_way(p1, t2, m) + one_way(p2, t1, jnp.swapaxes(m, 1, 2)))
  return collectives.pmean(local, axis_name)


def pixel_contrast(
  z1: jax.Array,
  z2: jax.Array,
  positive: jax.Array,
  *,
  temperature: float = 0.3,
  image_negatives: bool = False,
  axis_name: str | None = None,
) -> jax.Array:
  """Pixel-level InfoNCE with several positives (PixContrast, Xie et al. 2021, eq. 1; DenseCL negatives optional).

  Args:
    z1, z2: [n, P1, D], [n, P2, D] pixel embeddings of the two views of n local images.
    positive: [n, P1, P2] bool, true where view-1 pixel i and view-2 pixel j are positives.
    temperature: tau > 0 (PixContrast: 0.3).
    image_negatives: also use as negatives the mean-pooled other view of every other image of the global batch
      (DenseCL's negative keys are pooled features of other images, Wang et al. 2021); gathered across devices.

  Anchor pixel i of view 1 is scored (s = cos / tau) against the P2 pixels of its own image's view 2 (positives
  A_p(i), the rest negatives) and, with image_negatives, the N - 1 pooled keys of the other images:
    L_i = -log sum_{j in A_p(i)} e^{s_ij} + log (sum_{j <= P2} e^{s_ij} + sum_{c != own image} e^{s_ic}),
  and the same with the views swapped. The loss is the mean over all anchors of the global batch that have a
  positive (anchors outside the other view's crop are left out).
  """
  _check_maps(z1, z2, positive)
  check_positive("temperature", temperature)
  positive = positive.astype(bool)
  z1, z2 = l2_normalize(z1), l2_normalize(z2)
  n = z1.shape[0]
  image = collectives.axis_index(axis_name) * n + jnp.arange(n)

  def one_way(anchors, keys, pos):
    logits = jnp.einsum("npd,nqd->npq", anchors, keys) / temperature
    candidates = logits
    if image_negatives:
      pooled = collectives.all_gather(l2_normalize(jnp.mean(keys, axis=1)), axis_name)  # [N, D]
      image_logits = jnp.einsum("npd,cd->npc", anchors, pooled) / temperature
      own = image[:, None, None] == jnp.arange(pooled.shape[0])[None, None, :]
      candidates = jnp.concatenate([logits, jnp.where(own, -jnp.inf, image_logits)], axis=2)
    has_positive = jnp.any(pos, axis=2)
    # Rows without a positive take all pixels as "positives" so every logsumexp stays finite; they are masked out.
    numerator = jax.nn.logsumexp(jnp.where(pos | ~has_positive[..., None], logits, -jnp.inf), axis=2)
    per_anchor = jnp.where(has_positive, jax.nn.logsumexp(candidates, axis=2) - numerator, 0.0)
    return jnp.sum(per_anchor), jnp.sum(has_positive)

  sum12, count12 = one_way(z1, z2, positive)
  sum21, count21 = one_way(z2, z1, jnp.swapaxes(positive, 1, 2))
  total = collectives.psum(sum12 + sum21, axis_name)
  count = collectives.psum(count12 + count21, axis_name)
  return total / jnp.maximum(count, 1)

"""SimCLR / BYOL views that also say where they came from: the crop box of each view, for dense (pixel-level) losses.

PixPro and DenseCL-style losses pair the pixels of two views that show the same place of the original image, so
they need each view's crop in original-image coordinates. `boxed_views` returns `augment_jax.multi_view`'s views
unchanged plus those boxes, recomputed from the same per-example random draws (`augment_jax` draws all of an
example's uniforms in one call: crop first, then flip), so the boxes always describe the views actually made.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from input_pipeline import augment_jax
from input_pipeline.view_options import ViewOptions


def crop_boxes(
  rng: jax.Array,
  batch: int,
  height: int,
  width: int,
  *,
  crop_scale: Sequence[float] = ViewOptions.crop_scale,
  crop_ratio: Sequence[float] = ViewOptions.crop_ratio,
  flip_prob: float = ViewOptions.flip_prob,
  example_ids: jax.Array | None = None,
) -> jax.Array:
  """The crop boxes of `augment_jax.simclr_augment(rng, images [batch, height, width, 3], ...)`: float32 [batch, 4].

  A box is (y0, x0, h, w) in original pixels (pixel k spans [k, k + 1)): output pixel (r, c) of the out_h x out_w
  view is centred on (y0 + (r + 0.5) h / out_h, x0 + (c + 0.5) w / out_w). A flipped view has x0 at the crop's
  right edge and w < 0, so the same formula holds.
  """
  ids = jnp.arange(batch) if example_ids is None else example_ids
  attempts = augment_jax._CROP_ATTEMPTS

  def one(i):
    u = jax.random.uniform(jax.random.fold_in(rng, i), (augment_jax._NUM_UNIFORMS,))
    y0, x0, h, w = augment_jax._sample_crop(u, height, width, tuple(crop_scale), tuple(crop_ratio))
    flip = u[2 * attempts + 2] < flip_prob
    return jnp.stack([y0, jnp.where(flip, x0 + w, x0), h, jnp.where(flip, -w, w)]).astype(jnp.float32)

  return jax.vmap(one)(ids)


def boxed_views(
  rng: jax.Array,
  images: jax.Array,
  num_views: int = 2,
  *,
  crop_scale: Sequence[float] = ViewOptions.crop_scale,
  crop_ratio: Sequence[float] = ViewOptions.crop_ratio,
  flip_prob: float = ViewOptions.flip_prob,
  **augment,
) -> tuple[jax.Array, jax.Array]:
  """`num_views` SimCLR views and their crop boxes: [B, H, W, 3] -> (float32 [V, B, h, w, 3], float32 [V, B, 4]).

  View v is `augment_jax.multi_view(rng, ...)[v]` (same keys, same pixels); `augment` takes the other options of
  `augment_jax.simclr_augment` (out_size, colour jitter, blur, ...). Feed the boxes to
  `losses.crop_pixel_distance` to find the positive pixel pairs of two views.
  """
  crop = dict(crop_scale=crop_scale, crop_ratio=crop_ratio, flip_prob=flip_prob)
  views = augment_jax.multi_view(rng, images, num_views, **crop, **augment)
  batch, height, width = images.shape[:3]
  ids = augment.get("example_ids")
  boxes = jnp.stack(
    [crop_boxes(jax.random.fold_in(rng, v), batch, height, width, **crop, example_ids=ids) for v in range(num_views)]
  )
  return views, boxes

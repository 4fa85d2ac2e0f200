"""Pixel-level contrast, PixPro style (Xie et al. 2021): two cropped views of each image, an online encoder (backbone
feature map -> per-pixel projection MLP -> pixel propagation module) regressed onto the per-pixel projections of a
momentum (EMA) encoder at the pixels where the two crops overlap.

Positives: feature-map pixels of the two views whose centres lie closer than config.dense.distance_threshold
feature bins in the original image (`losses.crop_pixel_distance` of the views' crop boxes from
`input_pipeline.augment_dense.boxed_views`). Loss (config.loss.name): `pixpro`, both directions, averaged over the
global batch; or `pixel_contrast` (PixContrast, same paper: InfoNCE of each view's online pixel projections against
the other view's momentum projections, the other pixels (and with image_negatives, other images) as negatives).
extra = {"key_params": EMA of params} (checkpointed with the state), updated after each optimizer step:
key_params <- m key_params + (1 - m) params. The loss is a mean of per-image terms with no negatives, so gradient
accumulation in micro-batches is exact.

Predict functions: embed_image (pooled backbone features) and embed_pixels (the backbone feature map), the features
a dense task (the `dense_probe` evaluation) fine-tunes or probes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import losses
import models
from input_pipeline import augment_dense
from methods.base import (
  EncoderWithHead,
  Method,
  backbone_embed,
  backbone_pixels,
  loss_from_config,
  model_spec,
  momentum_update,
  normalize_images,
  on_mesh,
)


class PixelEncoder(nn.Module):
  """Feature map [B, h, w, F] -> per-pixel projections z [B, h w, D] -> propagated y [B, h w, D] (PixPro's online
  branch; the momentum branch stops at z). Parameter names follow EncoderWithHead (backbone, head), plus ppm."""

  backbone: dict
  head: dict
  ppm: dict

  @nn.compact
  def __call__(self, x, *, train: bool, propagate: bool = True):
    fmap = models.build(self.backbone, "backbone")(x, train=train, pool=False)
    b, h, w, c = fmap.shape
    z = models.build({"name": "projection_head", **self.head}, "head")(fmap.reshape(b * h * w, c), train=train)
    z = z.reshape(b, h * w, -1)
    y = models.build({"name": "pixel_propagation", **self.ppm}, "ppm")(z, train=train) if propagate else None
    return fmap, z, y


def build(config, mesh: Mesh) -> Method:
  dense = config.dense
  backbone = model_spec(config.model, config.model)
  ppm = {"gamma": dense.ppm_gamma, "transform_layers": dense.ppm_layers, "dtype": config.model.dtype}
  model = PixelEncoder(backbone=backbone, head=config.head.to_dict(), ppm=ppm)
  # The same parameter tree (backbone, head) seen as an image encoder, for the predict functions.
  encoder = EncoderWithHead(backbone=backbone, head=config.head.to_dict())
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  augment = config.augment.to_dict()
  if config.loss.name not in ("pixpro", "pixel_contrast"):
    raise ValueError(f"The dense method's loss.name must be 'pixpro' or 'pixel_contrast', got {config.loss.name!r}.")
  propagate = config.loss.name == "pixpro"  # PixContrast compares the projections themselves: no propagation module
  pixel_loss, hyper = loss_from_config(config.loss)
  loss = on_mesh(pixel_loss, mesh, num_inputs=5 if propagate else 3, **hyper)
  momentum = dense.momentum

  def init(rng, batch):
    variables = model.init(rng, normalize_images(batch["image"][:2], mean, std), train=False, propagate=propagate)
    params = variables.pop("params")
    return params, dict(variables), {"key_params": params}

  def loss_fn(params, model_state, extra, batch, rng):
    views, boxes = augment_dense.boxed_views(rng, batch["image"], 2, **augment)  # [2, B, H, W, 3], [2, B, 4]
    # Example-major [2B, H, W, 3] (x0_v0, x0_v1, x1_v0, ...): both views of an example stay on its device.
    x = normalize_images(jnp.swapaxes(views, 0, 1).reshape((-1,) + views.shape[2:]), mean, std)
    variables = {"params": params, **model_state}
    (fmap, z, y), new_state = model.apply(variables, x, train=True, propagate=propagate, mutable=list(model_state))
    # Targets: the momentum encoder's projections, with this batch's statistics (running averages not kept).
    (_, t, _), _ = model.apply(
      {"params": extra["key_params"], **model_state}, x, train=True, propagate=False, mutable=list(model_state)
    )
    size = fmap.shape[1:3]
    positive = losses.crop_pixel_distance(boxes[0], boxes[1], size, size) < dense.distance_threshold
    t = jax.lax.stop_gradient(t.astype(jnp.float32)).reshape((-1, 2) + t.shape[1:])
    if propagate:
      y = y.astype(jnp.float32).reshape((-1, 2) + y.shape[1:])
      value = loss(y[:, 0], y[:, 1], t[:, 0], t[:, 1], positive)
    else:  # each view's online pixels against the other view's momentum pixels, both ways
      z = z.astype(jnp.float32).reshape((-1, 2) + z.shape[1:])
      value = 0.5 * (loss(z[:, 0], t[:, 1], positive) + loss(z[:, 1], t[:, 0], jnp.swapaxes(positive, 1, 2)))
    overlap = jnp.mean(jnp.any(positive, axis=(1, 2)))
    return value, (dict(new_state), extra, {"loss": value, "overlapping_views": overlap})

  return Method(
    init=init,
    loss_fn=loss_fn,
    predict_fns={
      "embed_image": backbone_embed(encoder, mean, std),
      "embed_pixels": backbone_pixels(encoder, mean, std),
    },
    after_update=momentum_update(momentum),
  )

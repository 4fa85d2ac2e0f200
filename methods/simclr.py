"""SimCLR (Chen et al. 2020): two augmented views per image, encoder + projection MLP, NT-Xent over the global batch."""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import losses
import models
from input_pipeline import augment_jax
from methods.base import Method, compose_loss, normalize_images, on_mesh


class EncoderWithHead(nn.Module):
  """Backbone features h = f(x) [B, F] and projections z = g(h) [B, D]."""

  backbone: dict
  head: dict

  @nn.compact
  def __call__(self, x, *, train: bool, project: bool = True):
    backbone = dict(self.backbone)
    h = models.get(backbone.pop("name"))(**backbone, name="backbone")(x, train=train)
    if not project:
      return h, None
    return h, models.get("projection_head")(**dict(self.head), name="head")(h, train=train)


def two_views(rng: jax.Array, images: jax.Array, augment: dict) -> jax.Array:
  """[B, H, W, 3] -> [2B, H, W, 3] ordered (x0_v0, x0_v1, x1_v0, ...): both views of an example stay on its device."""
  views = [augment_jax.simclr_augment(jax.random.fold_in(rng, v), images, **augment) for v in range(2)]
  stacked = jnp.stack(views, axis=1)
  return stacked.reshape((-1,) + stacked.shape[2:])


def build(config, mesh: Mesh) -> Method:
  model = EncoderWithHead(backbone=config.model.to_dict(), head=config.head.to_dict())
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  loss_hyper = config.loss.to_dict()
  loss = on_mesh(losses.get(loss_hyper.pop("name")), mesh, num_inputs=2, **loss_hyper)
  augment = config.augment.to_dict()

  def init(rng, batch):
    variables = model.init(rng, normalize_images(batch["image"][:2], mean, std), train=False)
    params = variables.pop("params")
    return params, dict(variables), {}

  def prepare_fn(batch, rng):
    """Both normalised views of each example: [B, 2, H, W, 3]."""
    views = normalize_images(two_views(rng, batch["image"], augment), mean, std)
    return views.reshape((-1, 2) + views.shape[1:])

  def encode_fn(params, model_state, views, rng):
    """Projections [b, 2, D] of views [b, 2, H, W, 3] (one forward pass over the 2b images)."""
    del rng
    flat = views.reshape((-1,) + views.shape[2:])
    (_, z), new_state = model.apply({"params": params, **model_state}, flat, train=True, mutable=list(model_state))
    return z.reshape((-1, 2) + z.shape[1:]), dict(new_state)

  def embedding_loss_fn(params, extra, z, rng):
    del params, rng
    z = z.astype(jnp.float32)  # the loss runs in float32 whatever the compute dtype of the model
    value = loss(z[:, 0], z[:, 1])
    return value, (extra, {"loss": value})

  def embed_fn(params, model_state, batch) -> jax.Array:
    h, _ = model.apply(
      {"params": params, **model_state}, normalize_images(batch["image"], mean, std), train=False, project=False
    )
    return h

  return Method(
    init=init,
    loss_fn=compose_loss(prepare_fn, encode_fn, embedding_loss_fn),
    embed_fn=embed_fn,
    prepare_fn=prepare_fn,
    encode_fn=encode_fn,
    embedding_loss_fn=embedding_loss_fn,
  )

"""SimCLR (Chen et al. 2020): two augmented views per image, encoder + projection MLP, NT-Xent over the global batch."""

from __future__ import annotations


import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from input_pipeline import augment_jax
from methods.base import (
  Method,
  backbone_embed,
  compose_loss,
  encoder_with_head,
  loss_from_config,
  normalize_images,
  on_mesh,
  two_view_stages,
)


def two_views(rng: jax.Array, images: jax.Array, augment: dict) -> jax.Array:
  """[B, H, W, 3] -> [2B, H, W, 3] ordered (x0_v0, x0_v1, x1_v0, ...): both views of an example stay on its device."""
  views = [augment_jax.simclr_augment(jax.random.fold_in(rng, v), images, **augment) for v in range(2)]
  stacked = jnp.stack(views, axis=1)
  return stacked.reshape((-1,) + stacked.shape[2:])


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  loss_fn, loss_hyper = loss_from_config(config.loss)
  loss = on_mesh(loss_fn, mesh, num_inputs=2, **loss_hyper)
  augment = config.augment.to_dict()

  def init(rng, batch):
    variables = model.init(rng, normalize_images(batch["image"][:2], mean, std), train=False)
    params = variables.pop("params")
    return params, dict(variables), {}

  def prepare_fn(batch, rng):
    """Both normalised views of each example: [B, 2, H, W, 3]."""
    views = normalize_images(two_views(rng, batch["image"], augment), mean, std)
    return views.reshape((-1, 2) + views.shape[1:])

  encode_fn, embedding_loss_fn = two_view_stages(model, loss)

  return Method(
    init=init,
    loss_fn=compose_loss(prepare_fn, encode_fn, embedding_loss_fn),
    predict_fns={"embed_image": backbone_embed(model, mean, std)},
    prepare_fn=prepare_fn,
    encode_fn=encode_fn,
    embedding_loss_fn=embedding_loss_fn,
  )

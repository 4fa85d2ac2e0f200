"""Supervised contrastive learning (Khosla et al. 2020): two augmented views per image, positives = all views of the
same class in the global batch (SupCon L_out), encoder + projection MLP; evaluated by the trainer's linear probe
(and kNN) on frozen encoder features, as in the paper's two-stage protocol.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import losses
from methods.base import Method, backbone_embed, encoder_with_head, normalize_images, on_mesh
from methods.simclr import two_views


def _supcon_example_major(z: jax.Array, labels: jax.Array, **kwargs) -> jax.Array:
  """supcon on views stored example-major [n, V, D] (both views of an example on its device)."""
  return losses.supcon(jnp.swapaxes(z, 0, 1), labels, **kwargs)


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  hyper = config.loss.to_dict()
  if hyper.pop("name") != "supcon":
    raise ValueError(f"The supcon method needs loss.name='supcon', got {config.loss.name!r}.")
  loss = on_mesh(_supcon_example_major, mesh, num_inputs=2, **hyper)
  augment = config.augment.to_dict()

  def init(rng, batch):
    variables = model.init(rng, normalize_images(batch["image"][:2], mean, std), train=False)
    params = variables.pop("params")
    return params, dict(variables), {}

  def loss_fn(params, model_state, extra, batch, rng):
    views = normalize_images(two_views(rng, batch["image"], augment), mean, std)
    (_, z), new_state = model.apply({"params": params, **model_state}, views, train=True, mutable=list(model_state))
    value = loss(z.reshape((-1, 2) + z.shape[1:]), batch["label"])
    return value, (dict(new_state), extra, {"loss": value})

  return Method(init=init, loss_fn=loss_fn, predict_fns={"embed_image": backbone_embed(model, mean, std)})

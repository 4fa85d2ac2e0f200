"""Supervised contrastive learning (Khosla et al. 2020): two augmented views per image, positives = all views of the
same class in the global batch (SupCon L_out), encoder + projection MLP; evaluated by the trainer's linear probe
(and kNN) on frozen encoder features, as in the paper's two-stage protocol.

Soft labels: with config.supcon.superclasses (groups of class ids, e.g. CIFAR-100's 20 superclasses) each example's
target is the multi-hot one-hot(class) + one-hot(its group), and `losses.supcon` weighs every pair by the cosine
overlap of their targets: 1 for the same class, 1/2 for another class of the same group, 0 otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import losses
from methods.base import Method, backbone_embed, encoder_with_head, normalize_images, on_mesh
from methods.simclr import views


def _supcon_example_major(z: jax.Array, labels: jax.Array, **kwargs) -> jax.Array:
  """supcon on views stored example-major [n, V, D] (both views of an example on its device)."""
  return losses.supcon(jnp.swapaxes(z, 0, 1), labels, **kwargs)


def multi_hot_table(num_classes: int, superclasses) -> np.ndarray:
  """float32 [C, C + G]: row c = one-hot(c) followed by one-hot(the group of c); ValueError unless the groups
  partition the classes."""
  groups = [tuple(int(c) for c in g) for g in superclasses]
  members = sorted(c for g in groups for c in g)
  if members != list(range(num_classes)):
    raise ValueError(
      f"supcon.superclasses must put each of the {num_classes} classes in exactly one group, got {groups}."
    )
  table = np.zeros((num_classes, num_classes + len(groups)), np.float32)
  table[np.arange(num_classes), np.arange(num_classes)] = 1.0
  for g, group in enumerate(groups):
    table[list(group), num_classes + g] = 1.0
  return table


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  hyper = config.loss.to_dict()
  if hyper.pop("name") != "supcon":
    raise ValueError(f"The supcon method needs loss.name='supcon', got {config.loss.name!r}.")
  loss = on_mesh(_supcon_example_major, mesh, num_inputs=2, **hyper)
  augment = config.augment.to_dict()
  superclasses = config.supcon.superclasses
  targets = jnp.asarray(multi_hot_table(config.data.num_classes, superclasses)) if superclasses else None

  def init(rng, batch):
    variables = model.init(rng, normalize_images(batch["image"][:2], mean, std), train=False)
    params = variables.pop("params")
    return params, dict(variables), {}

  def loss_fn(params, model_state, extra, batch, rng):
    x = normalize_images(views(rng, batch["image"], augment), mean, std)
    (_, z), new_state = model.apply({"params": params, **model_state}, x, train=True, mutable=list(model_state))
    labels = batch["label"] if targets is None else targets[batch["label"]]
    value = loss(z.reshape((-1, 2) + z.shape[1:]), labels)
    return value, (dict(new_state), extra, {"loss": value})

  return Method(init=init, loss_fn=loss_fn, predict_fns={"embed_image": backbone_embed(model, mean, std)})

"""MoCo v2 (He et al. 2020; Chen et al. 2020): a query encoder trained against keys from its momentum (EMA) copy and a
queue of past keys as negatives; optional MoCHi hard-negative mixing (Kalantidis et al. 2020, loss.name = "mochi").

extra = {"key_params": EMA of params, "queue": [K, D] past keys, "queue_ptr": next slot}: part of the TrainState,
so both are checkpointed and restored with it. The queue is updated in the loss with this step's global keys (the
oldest N are replaced, K a multiple of the global batch N); the EMA after each optimizer update:
key_params <- m key_params + (1 - m) params.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import losses
from input_pipeline import augment_jax
from methods.base import Method, backbone_embed, encoder_with_head, loss_from_config, momentum_update, normalize_images
from methods.base import on_mesh


def enqueue(queue: jax.Array, ptr: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Writes keys [N, D] into queue [K, D] at rows ptr..ptr+N (K a multiple of N); returns (queue, next ptr)."""
  queue = jax.lax.dynamic_update_slice_in_dim(queue, keys.astype(queue.dtype), ptr, axis=0)
  return queue, (ptr + keys.shape[0]) % queue.shape[0]


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  augment = config.augment.to_dict()
  contrastive, hyper = loss_from_config(config.loss)
  loss_name = config.loss.name
  if loss_name not in ("nt_xent", "mochi"):
    raise ValueError(f"MoCo's loss.name must be 'nt_xent' or 'mochi', got {loss_name!r}.")
  queue_size, momentum = config.moco.queue_size, config.moco.momentum
  if queue_size % config.batch_size:
    raise ValueError(f"moco.queue_size={queue_size} must be a multiple of batch_size={config.batch_size}.")

  def init(rng, batch):
    params_rng, queue_rng = jax.random.split(rng)
    variables = model.init(params_rng, normalize_images(batch["image"][:2], mean, std), train=False)
    params = variables.pop("params")
    queue = losses.l2_normalize(jax.random.normal(queue_rng, (queue_size, config.head.out_dim)))
    extra = {"key_params": params, "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}
    return params, dict(variables), extra

  def loss_fn(params, model_state, extra, batch, rng):
    views = normalize_images(
      augment_jax.multi_view(jax.random.fold_in(rng, 0), batch["image"], 2, **augment), mean, std
    )
    (_, q), new_state = model.apply({"params": params, **model_state}, views[0], train=True, mutable=list(model_state))
    # Keys: the momentum encoder on the other view; batch statistics of this batch, running averages not kept.
    (_, k), _ = model.apply(
      {"params": extra["key_params"], **model_state}, views[1], train=True, mutable=list(model_state)
    )
    k = jax.lax.stop_gradient(losses.l2_normalize(k))
    bound = dict(queue=extra["queue"], **({"rng": jax.random.fold_in(rng, 1)} if loss_name == "mochi" else {}))
    value = on_mesh(functools.partial(contrastive, **bound), mesh, num_inputs=2, **hyper)(q, k)
    queue, ptr = enqueue(extra["queue"], extra["queue_ptr"], k)
    return value, (dict(new_state), {**extra, "queue": queue, "queue_ptr": ptr}, {"loss": value})

  return Method(
    init=init,
    loss_fn=loss_fn,
    predict_fns={"embed_image": backbone_embed(model, mean, std)},
    after_update=momentum_update(momentum),
  )

"""SwAV (Caron et al. 2020): multi-crop views, each predicting the Sinkhorn codes of the other large crops over a
layer of learnable prototypes; optional queue of past embeddings; prototypes frozen for the first steps.

- Prototypes live on the unit sphere: as in SwAV, the stored weights are re-normalised after every optimizer update
  (`Method.project_params` with `models.heads.normalize_prototypes`), so every step scores with unit prototypes.
- For the first `swav.freeze_prototypes_steps` steps the prototypes get no gradient (SwAV: first epoch).
- With `swav.queue_size` > 0, the large-crop embeddings of the last batches are kept in extra["queue"] [M, 2, D]; once
  it is full and `swav.queue_start_step` is reached, their prototype scores join the Sinkhorn step (codes only).
extra["step"] counts the applied updates (the loss cannot see the TrainState step).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import losses
import models
from input_pipeline import augment_jax
from methods.base import Method, encoder_with_head, normalize_images, on_mesh
from models.heads import normalize_prototypes


def _swav_example_major(high: jax.Array, low: jax.Array, queue: jax.Array | None = None, **kwargs) -> jax.Array:
  """losses.swav on example-major scores: high [n, H, K], low [n, L, K], queue [m, H, K]."""
  split = lambda x: list(jnp.swapaxes(x, 0, 1))
  return losses.swav(split(high), split(low), queue=None if queue is None else split(queue), **kwargs)


def _example_major(views: jax.Array) -> jax.Array:
  """[V, B, ...] -> [B * V, ...] with the V views of an example adjacent (they stay on its device)."""
  return jnp.swapaxes(views, 0, 1).reshape((-1,) + views.shape[2:])


def build(config, mesh: Mesh) -> Method:
  encoder = encoder_with_head(config)
  prototypes = models.get("prototypes")(num_prototypes=config.swav.num_prototypes)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  hyper = config.loss.to_dict()
  if hyper.pop("name") != "swav":
    raise ValueError(f"The swav method needs loss.name='swav', got {config.loss.name!r}.")
  swav = config.swav
  crop = dict(
    num_small=swav.num_small_crops,
    large_size=config.data.image_size,
    small_size=swav.small_size,
    large_scale=tuple(swav.large_scale),
    small_scale=tuple(swav.small_scale),
    **config.augment.to_dict(),
  )
  queue_size = swav.queue_size
  sharded_loss = functools.partial(on_mesh, _swav_example_major, mesh, **hyper)

  def init(rng, batch):
    enc_rng, proto_rng = jax.random.split(rng)
    variables = dict(encoder.init(enc_rng, normalize_images(batch["image"][:2], mean, std), train=False))
    params = {
      "encoder": variables.pop("params"),
      "prototypes": prototypes.init(proto_rng, jnp.zeros((1, config.head.out_dim)), train=False)["params"],
    }
    params["prototypes"] = normalize_prototypes(params["prototypes"])
    extra = {"step": jnp.zeros((), jnp.int32)}
    if queue_size:
      extra["queue"] = jnp.zeros((queue_size, 2, config.head.out_dim), jnp.float32)
      extra["queue_count"] = jnp.zeros((), jnp.int32)
    return params, variables, extra

  def loss_fn(params, model_state, extra, batch, rng):
    large, small = augment_jax.multi_crop(rng, batch["image"], **crop)
    state = model_state
    embeddings = []
    for views in (large, small):  # one encoder pass per crop size
      (_, z), state = encoder.apply(
        {"params": params["encoder"], **state},
        normalize_images(_example_major(views), mean, std),
        train=True,
        mutable=list(model_state),
      )
      embeddings.append(z.reshape((-1, views.shape[0]) + z.shape[1:]))
    frozen = extra["step"] < swav.freeze_prototypes_steps
    proto_params = jax.tree.map(lambda p: jnp.where(frozen, jax.lax.stop_gradient(p), p), params["prototypes"])
    score = lambda z: prototypes.apply({"params": proto_params}, z, train=False)
    high, low = (score(z) for z in embeddings)
    new_extra = dict(extra)
    if queue_size:
      queue_scores = jax.lax.stop_gradient(score(extra["queue"]))
      use_queue = (extra["queue_count"] >= queue_size) & (extra["step"] >= swav.queue_start_step)
      value = jax.lax.cond(
        use_queue,
        lambda: sharded_loss(num_inputs=3)(high, low, queue_scores),
        lambda: sharded_loss(num_inputs=2)(high, low),
      )
      new = jax.lax.stop_gradient(embeddings[0])
      new_extra["queue"] = jnp.concatenate([new, extra["queue"][: -new.shape[0]]])
      new_extra["queue_count"] = jnp.minimum(extra["queue_count"] + new.shape[0], queue_size)
    else:
      value = sharded_loss(num_inputs=2)(high, low)
    return value, (dict(state), new_extra, {"loss": value, "prototypes_frozen": frozen.astype(jnp.float32)})

  def after_update(params, extra, step):
    del params
    return {**extra, "step": step + 1}

  def project_params(params, step):
    del step
    return {**params, "prototypes": normalize_prototypes(params["prototypes"])}

  def embed_image(params, model_state, batch) -> jax.Array:
    h, _ = encoder.apply(
      {"params": params["encoder"], **model_state},
      normalize_images(batch["image"], mean, std),
      train=False,
      project=False,
    )
    return h

  return Method(
    init=init,
    loss_fn=loss_fn,
    predict_fns={"embed_image": embed_image},
    after_update=after_update,
    project_params=project_params,
  )

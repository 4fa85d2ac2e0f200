"""SimCLR (Chen et al. 2020) and the objectives that share its views: V augmented views per image, encoder +
projection MLP, one loss over the global batch (config.loss.name):
- two views: `nt_xent` (SimCLR), `dcl` / `dclw` (Yeh et al. 2022), `barlow_twins` (Zbontar et al. 2021), `vicreg`
  (Bardes et al. 2022);
- V = config.simclr.num_views >= 2 views: `mv_info_nce` (multi-view InfoNCE, Koromilas et al. 2025);
- `isogclr` (Qiu et al. 2023): a temperature per training example, learned beside the encoder, and the loss's moving
  averages, all in a table of dataset rows (extra["example_state"], split by row over the devices and checkpointed
  with the state) that the batch's "index" column (config.data.with_index) looks up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

import input_pipeline
import losses
from input_pipeline import augment_jax
from losses import collectives
from methods.base import (
  Method,
  backbone_embed,
  backbone_pixels,
  compose_loss,
  encoder_with_head,
  has_feature_maps,
  loss_from_config,
  normalize_images,
  on_mesh,
  stage_rngs,
  view_encoder,
)
from parallel import mesh as mesh_lib
from parallel import rows as rows_lib

MULTI_VIEW_LOSSES = ("mv_info_nce",)  # losses of views [V, n, D]; the others take (z1, z2)


def views(rng: jax.Array, images: jax.Array, augment: dict, num_views: int = 2) -> jax.Array:
  """[B, H, W, 3] -> [V B, H, W, 3] ordered (x0_v0, x0_v1, .., x1_v0, ...): an example's views stay on its device.
  View v is drawn with key fold_in(rng, v), so the first two of V views are the two views of V = 2."""
  stacked = jnp.stack(
    [augment_jax.simclr_augment(jax.random.fold_in(rng, v), images, **augment) for v in range(num_views)], axis=1
  )
  return stacked.reshape((-1,) + stacked.shape[2:])


def _example_major(loss):
  """A loss of views [V, n, D] called on example-major embeddings [n, V, D] (the batch axis first, for shard_map)."""
  return lambda z, **kwargs: loss(jnp.swapaxes(z, 0, 1), **kwargs)


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  try:
    loss_fn, loss_hyper = loss_from_config(config.loss)
  except ValueError as e:  # e.g. --config.loss.name=barlow_twins on a recipe whose loss block has a temperature
    raise ValueError(f"{e} configs/simclr_shapes.py has an argument per objective that sets its loss block.") from None
  name, num_views = config.loss.name, config.simclr.num_views
  if num_views < 2 or (num_views != 2 and name not in MULTI_VIEW_LOSSES):
    raise ValueError(
      f"simclr.num_views={num_views}: loss {name!r} takes two views; more than two need loss.name='mv_info_nce'."
    )
  augment = config.augment.to_dict()

  def init(rng, batch):
    variables = model.init(rng, normalize_images(batch["image"][:2], mean, std), train=False)
    params = variables.pop("params")
    return params, dict(variables), {}

  def prepare_fn(batch, rng):
    """The V normalised views of each example: [B, V, H, W, 3]."""
    x = normalize_images(views(rng, batch["image"], augment, num_views), mean, std)
    return x.reshape((-1, num_views) + x.shape[1:])

  encode_fn = view_encoder(model, num_views)

  predict_fns = {"embed_image": backbone_embed(model, mean, std)}
  if has_feature_maps(model.backbone):
    predict_fns["embed_pixels"] = backbone_pixels(model, mean, std)
  if losses.is_stateful(name):
    return _per_example_method(config, mesh, init, prepare_fn, encode_fn, predict_fns, loss_fn, loss_hyper)

  multi_view = name in MULTI_VIEW_LOSSES
  loss = on_mesh(_example_major(loss_fn) if multi_view else loss_fn, mesh, 1 if multi_view else 2, **loss_hyper)

  def embedding_loss_fn(params, extra, z, rng):
    del params, rng
    z = z.astype(jnp.float32)  # the loss runs in float32 whatever the compute dtype of the model
    value = loss(z) if multi_view else loss(z[:, 0], z[:, 1])
    return value, (extra, {"loss": value})

  return Method(
    init=init,
    loss_fn=compose_loss(prepare_fn, encode_fn, embedding_loss_fn),
    predict_fns=predict_fns,
    prepare_fn=prepare_fn,
    encode_fn=encode_fn,
    embedding_loss_fn=embedding_loss_fn,
  )


def isogclr_table_step(mesh: Mesh, loss_fn, loss_hyper: dict, tau_config):
  """The iSogCLR step on a per-example table: (z [B, 2, D], ids [B], table) -> (loss, new table, mean tau).

  The table (`losses.isogclr_init_state` rows + "tau" + "tau_grad") is split by row over the batch axes; each device
  gathers its examples' rows, computes the loss over the global batch, and writes back the new moving averages and
  temperatures. Temperature update (iSogCLR, Qiu et al. 2023, Alg. 1; LibAUC GCLoss_v1): G_i = the gradient of the
  robust objective w.r.t. tau_i (the mean over the example's two anchor views), u_i <- (1 - beta) u_i + beta G_i,
  tau_i <- clip(tau_i - eta u_i, tau_min, tau_max).
  """
  spec, axis = mesh_lib.batch_spec(mesh), mesh_lib.batch_axis_name(mesh)
  lo, hi = tau_config.tau_range
  beta, eta = tau_config.tau_momentum, tau_config.tau_lr

  def local(z, ids, table):
    rows = rows_lib.gather_rows(table, ids, axis)
    moving = {k: rows[k] for k in ("s_x", "s_y", "b_x", "b_y")}

    def robust(tau):
      return loss_fn(z[:, 0], z[:, 1], tau, tau, moving, axis_name=axis, **loss_hyper)

    (value, moving), tau_grad = jax.value_and_grad(robust, has_aux=True)(rows["tau"])
    # loss = mean_i (x anchor terms) + mean_i (y anchor terms), each linear in tau_i with slope G_i of that anchor:
    # N / 2 x the gradient is the mean of the example's two G_i.
    per_example = tau_grad * (z.shape[0] * collectives.axis_size(axis)) / 2
    u = (1 - beta) * rows["tau_grad"] + beta * per_example
    tau = jnp.clip(rows["tau"] - eta * u, lo, hi)
    table = rows_lib.scatter_rows(table, ids, {**moving, "tau": tau, "tau_grad": u}, axis)
    return value, table, collectives.pmean(jnp.mean(rows["tau"]), axis)

  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=(P(), spec, P()), check_vma=True)


def _per_example_method(config, mesh, init, prepare_fn, encode_fn, predict_fns, loss_fn, loss_hyper) -> Method:
  """SimCLR with a stateful loss (iSogCLR). Its loss is not split in stages, so gradient accumulation runs in
  micro-batches, each updating its own examples' rows (the estimator is per example and made for small batches)."""
  tau_config = config.isogclr
  num_rows = rows_lib.padded_size(input_pipeline.num_examples(config.data, "train"), mesh_lib.num_batch_shards(mesh))
  step = isogclr_table_step(mesh, loss_fn, loss_hyper, tau_config)

  def init_with_table(rng, batch):
    if "index" not in batch:
      raise ValueError(
        f"loss.name={config.loss.name!r} keeps a state per training example: set --config.data.with_index=True "
        "so that batches carry each row's dataset index."
      )
    params, model_state, _ = init(rng, batch)
    table = {
      **losses.isogclr_init_state(num_rows),
      "tau": jnp.full((num_rows,), tau_config.tau_init, jnp.float32),
      "tau_grad": jnp.zeros((num_rows,), jnp.float32),
    }
    return params, model_state, {"example_state": table}

  def loss_fn_with_table(params, model_state, extra, batch, rng):
    prepare_rng, encode_rng, _ = stage_rngs(rng)
    z, new_state = encode_fn(params, model_state, prepare_fn(batch, prepare_rng), encode_rng)
    value, table, tau_mean = step(z.astype(jnp.float32), batch["index"], extra["example_state"])
    return value, (new_state, {**extra, "example_state": table}, {"loss": value, "tau_mean": tau_mean})

  return Method(init=init_with_table, loss_fn=loss_fn_with_table, predict_fns=predict_fns)

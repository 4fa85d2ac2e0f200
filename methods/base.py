"""What every method provides to the trainer, and the pieces methods share."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

import losses
from configs import overrides
import models
from parallel import mesh as mesh_lib

# (rng, sample_batch) -> (params, model_state, extra)
InitFn = Callable[[jax.Array, dict], tuple[Any, Any, Any]]
# (params, model_state, extra, batch, rng) -> (loss, (new_model_state, new_extra, metrics))
LossFn = Callable[..., tuple[jax.Array, tuple[Any, Any, dict]]]

# A method may also split its loss in three stages, so the trainer can accumulate gradients over micro-batches while
# the loss still sees the whole batch of negatives (cached-embedding accumulation, GradCache: Gao et al. 2021):
# (batch, rng) -> inputs: pytree of per-example arrays with leading dim B (e.g. augmented views); no parameters.
PrepareFn = Callable[[dict, jax.Array], Any]
# (params, model_state, inputs, rng) -> (embeddings: pytree with leading dim b, new model_state). Row i of the
# embeddings depends only on row i of the inputs (no dropout, and BatchNorm only when train-mode statistics of a
# micro-batch are acceptable), so encoding micro-batches gives the rows of the full batch's embeddings.
EncodeFn = Callable[[Any, Any, Any, jax.Array], tuple[Any, Any]]
# (params, extra, embeddings, rng) -> (loss, (new_extra, metrics)) on the whole batch's embeddings.
EmbeddingLossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


# (params, model_state, batch) -> [B, ...]: what evaluators and exports call. Names say what they take and give:
# embed_image ({"image": uint8 [B, H, W, 3]}), embed_pixels (the same -> feature maps [B, h, w, F]), embed_text
# ({"text": int32 token ids [B, L]}), embed_embedding ({"embedding": [B, D]}), embed_series ({"series": [B, T, C]}),
# embed_graph ({"x", "adj", "node_mask"}), classify (-> logits), decode_<strategy> (-> token ids), input_<kind>
# (SimSkip's inputs). Keyword-only arguments after the batch are static options that an evaluation sets (e.g.
# decode_contrastive's top_k and alpha); they keep defaults.
PredictFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
  init: InitFn
  loss_fn: LossFn
  # The only way the trainer, evaluators and exports see the model (see PredictFn).
  predict_fns: dict[str, PredictFn]
  # Called after each optimizer update, e.g. for EMA encoders: (params, extra, step) -> extra.
  after_update: Callable[[Any, Any, jax.Array], Any] = lambda params, extra, step: extra
  # Maps the params after each optimizer update, e.g. SwAV's prototypes back onto the unit sphere: (params, step) ->
  # params of the same structure.
  project_params: Callable[[Any, jax.Array], Any] = lambda params, step: params
  # The three stages of `loss_fn` (see PrepareFn): all set, with loss_fn = compose_loss(...) of them, or all None.
  prepare_fn: PrepareFn | None = None
  encode_fn: EncodeFn | None = None
  embedding_loss_fn: EmbeddingLossFn | None = None

  @property
  def splits_loss(self) -> bool:
    """Whether the method supports cached-embedding gradient accumulation."""
    return None not in (self.prepare_fn, self.encode_fn, self.embedding_loss_fn)


class EncoderWithHead(nn.Module):
  """Backbone features h = f(x) [B, F] and projections z = g(h) [B, D] (SimCLR, MoCo, SupCon, SwAV, SimSkip, ...).

  `inputs` are the backbone's positional inputs: one array for most, (x, adj, node_mask) for graph encoders. Given
  `features` [B, F] instead, the backbone is skipped and those are projected (e.g. WhitenedCSE's whitened features).
  """

  backbone: dict
  head: dict

  @nn.compact
  def __call__(self, *inputs, train: bool, project: bool = True, pool: bool = True, features=None):
    """pool=False (with project=False): the backbone's feature map [B, h, w, F] instead of h."""
    if features is None:
      h = models.build(self.backbone, "backbone")(*inputs, train=train, **({} if pool else {"pool": False}))
    else:
      h = features
    if not project:
      return h, None
    return h, models.build({"name": "projection_head", **self.head}, "head")(h, train=train)


def model_spec(block, model_config) -> dict:
  """A model block (config.model, config.model.image, ...) as `models.build` takes it, with the run's model.dtype
  and model.remat levers."""
  return {**block.to_dict(), **{k: model_config[k] for k in ("dtype", "remat") if k not in block}}


def encoder_with_head(config) -> EncoderWithHead:
  """The image encoder of config.model with the projection head of config.head."""
  return EncoderWithHead(backbone=model_spec(config.model, config.model), head=config.head.to_dict())


def backbone_embed(model: EncoderWithHead, mean, std) -> PredictFn:
  """embed_image of an EncoderWithHead: pooled backbone features of normalised images (no projection)."""

  def embed_image(params, model_state, batch) -> jax.Array:
    h, _ = model.apply(
      {"params": params, **model_state}, normalize_images(batch["image"], mean, std), train=False, project=False
    )
    return h

  return embed_image


def has_feature_maps(backbone: dict) -> bool:
  """Whether a backbone spec's module returns feature maps with `pool=False` (ResNets)."""
  return "pool" in inspect.signature(models.get(backbone["name"]).__call__).parameters


def backbone_pixels(model: EncoderWithHead, mean, std) -> PredictFn:
  """embed_pixels of an EncoderWithHead whose backbone has feature maps: [B, h, w, F] of normalised images."""

  def embed_pixels(params, model_state, batch) -> jax.Array:
    h, _ = model.apply(
      {"params": params, **model_state},
      normalize_images(batch["image"], mean, std),
      train=False,
      project=False,
      pool=False,
    )
    return h

  return embed_pixels


def stage_rngs(rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Independent keys of the prepare, encode and embedding-loss stages of one step."""
  prepare_rng, encode_rng, loss_rng = jax.random.split(rng, 3)
  return prepare_rng, encode_rng, loss_rng


def view_encoder(model: EncoderWithHead, num_views: int) -> EncodeFn:
  """encode_fn of a V-view method: views [b, V, ...] (or a tuple of such arrays: the encoder's positional inputs,
  e.g. a graph's x, adj, node_mask) -> projections [b, V, D], one forward pass over the V b views."""

  def encode_fn(params, model_state, views, rng):
    del rng
    flat = [v.reshape((-1,) + v.shape[2:]) for v in (views if isinstance(views, tuple) else (views,))]
    (_, z), new_state = model.apply({"params": params, **model_state}, *flat, train=True, mutable=list(model_state))
    return z.reshape((-1, num_views) + z.shape[1:]), dict(new_state)

  return encode_fn


def two_view_method(
  model: EncoderWithHead,
  loss: Callable[..., jax.Array],
  input_keys: tuple[str, ...],
  prepare_fn: PrepareFn,
  predict_name: str,
) -> Method:
  """A two-view method (the series / graph versions of SimCLR) in stages: the model's positional inputs are
  batch[k] for k in input_keys; prepare_fn gives both views of them ([B, 2, ...] each); the loss is
  loss(z[:, 0], z[:, 1]) in float32 whatever the model's compute dtype; predict_fns[predict_name] is the encoder's
  embedding before the head."""

  def init(rng, batch):
    variables = model.init(rng, *(batch[k][:2] for k in input_keys), train=False)
    params = variables.pop("params")
    return params, dict(variables), {}

  encode_fn = view_encoder(model, 2)

  def embedding_loss_fn(params, extra, z, rng):
    del params, rng
    z = z.astype(jnp.float32)
    value = loss(z[:, 0], z[:, 1])
    return value, (extra, {"loss": value})

  def embed(params, model_state, batch) -> jax.Array:
    h, _ = model.apply({"params": params, **model_state}, *(batch[k] for k in input_keys), train=False, project=False)
    return h

  return Method(
    init=init,
    loss_fn=compose_loss(prepare_fn, encode_fn, embedding_loss_fn),
    predict_fns={predict_name: embed},
    prepare_fn=prepare_fn,
    encode_fn=encode_fn,
    embedding_loss_fn=embedding_loss_fn,
  )


def momentum_update(momentum: float) -> Callable[[Any, Any, jax.Array], Any]:
  """Method.after_update of a momentum (key) encoder: key_params <- m key_params + (1 - m) params, m = momentum,
  on extra["key_params"] (MoCo, He et al. 2020)."""

  def after_update(params, extra, step):
    del step
    return {**extra, "key_params": optax.incremental_update(params, extra["key_params"], 1.0 - momentum)}

  return after_update


def compose_loss(prepare_fn: PrepareFn, encode_fn: EncodeFn, embedding_loss_fn: EmbeddingLossFn) -> LossFn:
  """The LossFn of a method split in stages: prepare the batch, encode it whole, loss on the embeddings."""

  def loss_fn(params, model_state, extra, batch, rng):
    prepare_rng, encode_rng, loss_rng = stage_rngs(rng)
    embeddings, new_state = encode_fn(params, model_state, prepare_fn(batch, prepare_rng), encode_rng)
    value, (new_extra, metrics) = embedding_loss_fn(params, extra, embeddings, loss_rng)
    return value, (new_state, new_extra, metrics)

  return loss_fn


def on_mesh(loss: Callable[..., jax.Array], mesh: Mesh, num_inputs: int, **hyper) -> Callable[..., jax.Array]:
  """Runs a loss on each device's local shard of its `num_inputs` batch-sharded arguments.

  The loss gets `axis_name` = the batch mesh axes, so it gathers negatives itself and returns the global value on every
  device (out_specs=P()); its gradient w.r.t. the global inputs is the single-device gradient.
  """
  spec = mesh_lib.batch_spec(mesh)
  fn = functools.partial(loss, axis_name=mesh_lib.batch_axis_name(mesh), **hyper)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * num_inputs, out_specs=P(), check_vma=True)


def normalize_images(images: jax.Array, mean, std) -> jax.Array:
  """uint8 [.., H, W, 3] or float in [0, 1] -> float32 standardised per channel."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def check_kwargs(fn: Callable, kwargs: dict, block: str, what: str) -> dict:
  """`kwargs` (a config block) when every key is a keyword-only or defaulted argument of `fn`, else a did-you-mean
  ValueError naming `block` (e.g. "config.loss") and `what` takes them (e.g. the loss's name)."""
  params = inspect.signature(fn).parameters.values()
  accepted = [
    p.name
    for p in params
    if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)
  ]
  overrides.check_keywords(kwargs, [a for a in accepted if a not in ("axis_name", "example_ids")], block, what)
  return kwargs


def loss_from_config(loss_config) -> tuple[Callable[..., jax.Array], dict]:
  """(loss function, its keyword arguments) of config.loss: `name` picks it from `losses`; every other key must be
  one of its keyword arguments (else a did-you-mean error). chunked / ring modes need a chunk_size > 0."""
  hyper = loss_config.to_dict()
  fn = losses.get(hyper.pop("name"))
  check_kwargs(fn, hyper, "config.loss", loss_config.name)
  if hyper.get("mode", "dense") != "dense" and not hyper.get("chunk_size"):
    raise ValueError(f"loss.mode={hyper['mode']!r} needs loss.chunk_size > 0 (logit block width, e.g. 256).")
  return fn, hyper

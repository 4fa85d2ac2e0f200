"""SimCSE (Gao et al. 2021) and ESimCSE (Wu et al. 2022): sentence embeddings from contrastive views of sentences.

Every variant is one InfoNCE over the global batch, written as `losses.supcon` on rows labelled by sentence (a row's
positive is the other row of its sentence, every other row is a negative):
- unsupervised: the same sentence twice through the encoder with two dropout masks -> rows z, z' (NT-Xent exactly);
  with a "text_pos" column (e.g. data.text_views="word_repetition", ESimCSE's views) z' encodes that instead.
- supervised: "text", "text_pos" (entailment), "text_neg" (contradiction) -> rows z, z+, z-; z- has a label of its
  own, so it is a hard negative for every anchor (anchors are z and z+: the symmetric form of SimCSE's loss).
- ESimCSE: config.simcse.queue_size > 0 adds the queue of momentum-encoder embeddings of earlier batches as rows with
  labels of their own (negatives only). extra = {"key_params": EMA of params, "queue": [K, D], "queue_ptr"}; the EMA
  encoder runs without dropout and encodes each batch's sentences before they enter the queue.
Predict function: embed_text (the pooled sentence embedding before the projection head), which the configured
evaluations use (STS on scored pairs; kNN / linear probe of the shapes captions' classes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

import losses
from methods import pretrained
from methods.base import Method, encoder_with_head, on_mesh
from methods.moco import enqueue


def _labelled_supcon(z: jax.Array, labels: jax.Array, *negatives, **kwargs) -> jax.Array:
  """supcon over the rows z [n, V, D] (labels [n, V]) plus optional negative rows [m, D] with labels [m]."""
  rows = [z.reshape(-1, z.shape[-1])] + list(negatives[:1])
  row_labels = [labels.reshape(-1)] + list(negatives[1:])
  return losses.supcon(jnp.concatenate(rows)[None], jnp.concatenate(row_labels), **kwargs)


def text_tokens(batch: dict) -> jax.Array:
  """The sentence tokens of a batch: "text" (sentence sources) or "caption" (image-text sources)."""
  return batch["text"] if "text" in batch else batch["caption"]


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  hyper = config.loss.to_dict()
  if hyper.pop("name") != "supcon":
    raise ValueError(
      f"SimCSE's loss is supcon over sentence-labelled rows; set loss.name='supcon', got {config.loss.name!r}."
    )
  queue_size, momentum = config.simcse.queue_size, config.simcse.momentum
  if queue_size and queue_size % config.batch_size:
    raise ValueError(f"simcse.queue_size={queue_size} must be a multiple of batch_size={config.batch_size}.")

  def init(rng, batch):
    params_rng, queue_rng = jax.random.split(rng)
    variables = model.init(params_rng, text_tokens(batch)[:2], train=False)
    params = pretrained.load_into(config.pretrained, variables.pop("params"))
    extra = {}
    if queue_size:
      queue = losses.l2_normalize(jax.random.normal(queue_rng, (queue_size, config.head.out_dim)))
      extra = {"key_params": params, "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}
    return params, dict(variables), extra

  def encode(params, model_state, tokens, rng):
    (_, z), _ = model.apply(
      {"params": params, **model_state}, tokens, train=True, rngs={"dropout": rng}, mutable=list(model_state)
    )
    return z

  def loss_fn(params, model_state, extra, batch, rng):
    anchors = text_tokens(batch)
    views = [anchors, batch.get("text_pos", anchors)] + ([batch["text_neg"]] if "text_neg" in batch else [])
    z = jnp.stack([encode(params, model_state, t, jax.random.fold_in(rng, v)) for v, t in enumerate(views)], axis=1)
    n = z.shape[0]
    ids = jnp.arange(n, dtype=jnp.int32)
    labels = jnp.stack([ids, ids] + ([ids + n] if len(views) == 3 else []), axis=1)
    new_extra = extra
    if queue_size:
      queue_labels = jnp.arange(queue_size, dtype=jnp.int32) + 2 * n
      value = on_mesh(_labelled_supcon, mesh, num_inputs=4, **hyper)(z, labels, extra["queue"], queue_labels)
      (_, keys) = model.apply({"params": extra["key_params"], **model_state}, anchors, train=False)
      queue, ptr = enqueue(extra["queue"], extra["queue_ptr"], jax.lax.stop_gradient(keys))
      new_extra = {**extra, "queue": queue, "queue_ptr": ptr}
    else:
      value = on_mesh(_labelled_supcon, mesh, num_inputs=2, **hyper)(z, labels)
    return value, (model_state, new_extra, {"loss": value})

  def after_update(params, extra, step):
    del step
    if not queue_size:
      return extra
    return {**extra, "key_params": optax.incremental_update(params, extra["key_params"], 1.0 - momentum)}

  def embed_text(params, model_state, batch) -> jax.Array:
    h, _ = model.apply({"params": params, **model_state}, text_tokens(batch), train=False, project=False)
    return h

  return Method(init=init, loss_fn=loss_fn, predict_fns={"embed_text": embed_text}, after_update=after_update)

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
Evaluation: STS Spearman on config.eval.sts_path (score<TAB>s1<TAB>s2) when set, else kNN + linear probe of the
test split's sentence embeddings against its labels (the shapes captions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import losses
from methods import pretrained
from methods.base import Method, on_mesh
from methods.moco import ema, enqueue
from methods.simclr import EncoderWithHead


def _labelled_supcon(z: jax.Array, labels: jax.Array, *negatives, **kwargs) -> jax.Array:
  """supcon over the rows z [n, V, D] (labels [n, V]) plus optional negative rows [m, D] with labels [m]."""
  rows = [z.reshape(-1, z.shape[-1])] + list(negatives[:1])
  row_labels = [labels.reshape(-1)] + list(negatives[1:])
  return losses.supcon(jnp.concatenate(rows)[None], jnp.concatenate(row_labels), **kwargs)


def text_tokens(batch: dict) -> jax.Array:
  """The sentence tokens of a batch: "text" (sentence sources) or "caption" (image-text sources)."""
  return batch["text"] if "text" in batch else batch["caption"]


def build(config, mesh: Mesh) -> Method:
  model = EncoderWithHead(backbone=config.model.to_dict(), head=config.head.to_dict())
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
    params = pretrained.load_into(config.get("pretrained"), variables.pop("params"))
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
    return {**extra, "key_params": ema(extra["key_params"], params, momentum)} if queue_size else extra

  def embed_fn(params, model_state, batch) -> jax.Array:
    h, _ = model.apply({"params": params, **model_state}, text_tokens(batch), train=False, project=False)
    return h

  def evaluate(config, state, mesh) -> dict:
    return sentence_evaluation(config, mesh, jax.jit(lambda b: embed_fn(state.params, state.model_state, b)))

  return Method(
    init=init, loss_fn=loss_fn, embed_fn=embed_fn, after_update=after_update, evaluate=evaluate, embed_text_fn=embed_fn
  )


def sentence_evaluation(config, mesh, embed) -> dict:
  """STS Spearman x100 on config.eval.sts_path if set, else kNN + linear probe of test-split sentence embeddings.

  embed: jitted {"text": int32 [b, L]} -> [b, D].
  """
  import evaluators
  import input_pipeline
  from methods import image_text
  from parallel import mesh as mesh_lib

  def embed_texts(texts) -> np.ndarray:
    return evaluators.embed_arrays(
      embed,
      {"text": image_text.tokenize(config, texts)},
      batch_size=config.eval.batch_size,
      sharding=mesh_lib.batch_sharding(mesh),
    )

  if config.eval.get("sts_path", ""):
    scores, first, second = evaluators.load_sts_tsv(config.eval.sts_path)
    return {"sts_spearman": evaluators.sts_spearman(embed_texts(first), embed_texts(second), scores)}
  splits = {s: input_pipeline.load_split(config.data, s) for s in ("train", "test")}
  key = "text" if "text" in splits["test"] else "caption"
  limit = config.eval.get("train_examples", 0) or None
  train_x, train_y = embed_texts(splits["train"][key][:limit]), splits["train"]["label"][:limit]
  test_x, test_y = embed_texts(splits["test"][key]), splits["test"]["label"]
  num_classes = config.data.num_classes
  probe = evaluators.linear_probe(train_x, train_y, test_x, test_y, num_classes=num_classes, seed=config.seed)
  return {
    "chance": 1.0 / num_classes,
    "linear_probe_accuracy": float(probe["accuracy"]),
    "knn_accuracy": float(
      evaluators.knn_accuracy(
        train_x,
        train_y,
        test_x,
        test_y,
        k=config.eval.knn_k,
        temperature=config.eval.knn_temperature,
        num_classes=num_classes,
      )
    ),
  }

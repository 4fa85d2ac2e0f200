"""SimCSE (Gao et al. 2021) and its family: sentence embeddings from contrastive views of sentences.

Every variant is one InfoNCE over the global batch. With loss.name="supcon" (the default) it is `losses.supcon` on
rows labelled by sentence (a row's positives are the other rows of its sentence, every other row is a negative):
- unsupervised: the same sentence twice through the encoder with two dropout masks -> rows z, z' (NT-Xent exactly);
  with a "text_pos" column (e.g. data.text_views="word_repetition", ESimCSE's views) z' encodes that instead.
- supervised: "text", "text_pos" (entailment), "text_neg" (contradiction) -> rows z, z+, z-; z- has a label of its
  own, so it is a hard negative for every anchor (anchors are z and z+: the symmetric form of SimCSE's loss).
- ESimCSE (Wu et al. 2022): config.simcse.queue_size > 0 adds the queue of momentum-encoder embeddings of earlier
  batches as rows with labels of their own (negatives only). extra = {"key_params": EMA of params, "queue": [K, D],
  "queue_ptr"}; the EMA encoder runs without dropout and encodes each batch's sentences before they enter the queue.
Options of config.simcse (configs/default.py `simcse()`):
- WhitenedCSE (Zhuo et al. 2023): whitening_groups > 0 whitens the pooled features of the batch (all its rows, over
  all devices) in shuffled channel groups (`losses.shuffled_group_whitening`) before the projection head; positive
  view v is dropout pass v mod 2 whitened under its own channel shuffle, whitening_views of them per sentence.
- Debiased negatives: loss.name="debiased_info_nce" (Chuang et al. 2020's estimate of the negative term, prior
  loss.tau_plus): the debiasing option of the family (DebCSE, Miao et al. 2023, debiases by reweighting pairs instead).
- MultiCSR-style refinement (Wang et al. 2024): reference=True with loss.name="weighted_info_nce": the frozen initial
  (e.g. pretrained) encoder embeds each pair without dropout; a negative it finds closer to the anchor than
  max_negative_similarity is dropped as a likely positive, a pair below min_positive_similarity is dropped as noisy
  (`losses.reference_pair_weights`). extra["reference_params"] holds that encoder.
The pair losses (weighted_info_nce, debiased_info_nce) contrast the two positive views; the queue and hard negatives
need supcon.
Predict function: embed_text (the pooled sentence embedding before the projection head), which the configured
evaluations use (STS on scored pairs; kNN / linear probe of the shapes captions' classes).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import losses
from methods import pretrained
from methods.base import Method, encoder_with_head, loss_from_config, momentum_update, on_mesh
from methods.moco import enqueue

LOSSES = ("supcon", "weighted_info_nce", "debiased_info_nce")


def _labelled_supcon(z: jax.Array, labels: jax.Array, *negatives, **kwargs) -> jax.Array:
  """supcon over the rows z [n, V, D] (labels [n, V]) plus optional negative rows [m, D] with labels [m]."""
  rows = [z.reshape(-1, z.shape[-1])] + list(negatives[:1])
  row_labels = [labels.reshape(-1)] + list(negatives[1:])
  return losses.supcon(jnp.concatenate(rows)[None], jnp.concatenate(row_labels), **kwargs)


def _refined_info_nce(z1, z2, r1, r2, *, temperature, max_negative_similarity, min_positive_similarity, axis_name):
  """weighted_info_nce of z1, z2 [n, D] with the pair weights of the reference embeddings r1, r2 [n, F]."""
  weights = losses.reference_pair_weights(
    r1,
    r2,
    max_negative_similarity=max_negative_similarity,
    min_positive_similarity=min_positive_similarity,
    axis_name=axis_name,
  )
  return losses.weighted_info_nce(z1, z2, *weights, temperature=temperature, axis_name=axis_name)


def text_tokens(batch: dict) -> jax.Array:
  """The sentence tokens of a batch: "text" (sentence sources) or "caption" (image-text sources)."""
  return batch["text"] if "text" in batch else batch["caption"]


def _check(config) -> None:
  s, name = config.simcse, config.loss.name
  if name not in LOSSES:
    raise ValueError(f"SimCSE's loss.name is one of {', '.join(LOSSES)}; got {name!r}.")
  if s.queue_size and (name != "supcon" or s.queue_size % config.batch_size):
    raise ValueError(
      f"simcse.queue_size={s.queue_size} needs loss.name='supcon' and a multiple of batch_size={config.batch_size}."
    )
  if s.reference and name != "weighted_info_nce":
    raise ValueError(f"simcse.reference=True weighs pairs for loss.name='weighted_info_nce', not {name!r}.")
  if s.whitening_views < 2 or (name != "supcon" and s.whitening_groups and s.whitening_views != 2):
    raise ValueError(f"simcse.whitening_views={s.whitening_views}: at least 2, exactly 2 with loss.name={name!r}.")


def _pair_loss(config, mesh: Mesh):
  """The pair loss of config.loss on the mesh: (z1, z2 [n, D], and with simcse.reference the reference embeddings
  r1, r2 [n, F]) -> scalar."""
  loss_fn, hyper = loss_from_config(config.loss)
  s = config.simcse
  if not s.reference:
    return on_mesh(loss_fn, mesh, num_inputs=2, **hyper)
  refine = dict(max_negative_similarity=s.max_negative_similarity, min_positive_similarity=s.min_positive_similarity)
  return on_mesh(_refined_info_nce, mesh, num_inputs=4, **hyper, **refine)


def whitened_rows(project, h: jax.Array, rng: jax.Array, *, num_groups: int, num_views: int) -> jax.Array:
  """WhitenedCSE's rows [n, V (+ 1), D] from the pooled features h [n, S, F] of S dropout passes (the third, if any,
  of hard negatives): the batch's features are whitened under V channel shuffles (`shuffled_group_whitening`), view v
  keeps pass v mod 2 of its whitening, a hard negative that of the first; `project` maps [m, F] -> [m, D]."""
  n, passes, width = h.shape
  flat = h.reshape(-1, width).astype(jnp.float32)
  white = [
    project(losses.shuffled_group_whitening(jax.random.fold_in(rng, v), flat, num_groups=num_groups))
    for v in range(num_views)
  ]
  white = [w.reshape(n, passes, -1) for w in white]
  return jnp.concatenate([w[:, v % 2][:, None] for v, w in enumerate(white)] + [white[0][:, 2:]], axis=1)


def build(config, mesh: Mesh) -> Method:
  _check(config)
  model = encoder_with_head(config)
  s = config.simcse
  queue_size, momentum, groups = s.queue_size, s.momentum, s.whitening_groups
  num_positive = s.whitening_views if groups else 2
  pairwise = config.loss.name != "supcon"
  if pairwise:
    pair_loss = _pair_loss(config, mesh)
  else:
    hyper = loss_from_config(config.loss)[1]

  def init(rng, batch):
    params_rng, queue_rng = jax.random.split(rng)
    variables = model.init(params_rng, text_tokens(batch)[:2], train=False)
    params = pretrained.load_into(config.pretrained, variables.pop("params"))
    extra = {}
    if queue_size:
      queue = losses.l2_normalize(jax.random.normal(queue_rng, (queue_size, config.head.out_dim)))
      extra = {"key_params": params, "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}
    if s.reference:
      extra["reference_params"] = params
    return params, dict(variables), extra

  def train_apply(params, model_state, *tokens, **kwargs):
    """The model in train mode (dropout; a BatchNorm head's statistics are not kept): (features, projections)."""
    out, _ = model.apply({"params": params, **model_state}, *tokens, train=True, mutable=list(model_state), **kwargs)
    return out

  def project(params, model_state, h):
    """Projections [m, D] of pooled features [m, F]."""
    return train_apply(params, model_state, features=h)[1]

  def rows(params, model_state, views, rng):
    """Projected rows z [n, V, D] of the sentence views [n, L] each: V = num_positive (+ 1 hard negative)."""
    passes = [
      train_apply(params, model_state, t, project=False, rngs={"dropout": jax.random.fold_in(rng, v)})[0]
      for v, t in enumerate(views)
    ]
    h = jnp.stack(passes, axis=1)  # [n, S, F]: dropout pass v encodes view v
    if groups:
      project_fn = functools.partial(project, params, model_state)
      whiten_rng = jax.random.fold_in(rng, len(views))
      return whitened_rows(project_fn, h, whiten_rng, num_groups=groups, num_views=num_positive)
    return project(params, model_state, h.reshape(-1, h.shape[-1])).reshape(h.shape[:2] + (-1,))

  def reference_features(extra, model_state, tokens):
    h, _ = model.apply({"params": extra["reference_params"], **model_state}, tokens, train=False, project=False)
    return jax.lax.stop_gradient(h)

  def loss_fn(params, model_state, extra, batch, rng):
    anchors = text_tokens(batch)
    views = [anchors, batch.get("text_pos", anchors)] + ([batch["text_neg"]] if "text_neg" in batch else [])
    if len(views) == 3 and pairwise:
      raise ValueError(f"loss.name={config.loss.name!r} contrasts pairs; hard negatives (text_neg) need supcon.")
    z = rows(params, model_state, views, rng)
    new_extra = extra
    if pairwise:
      pair = (z[:, 0], z[:, 1])
      if s.reference:
        pair += tuple(reference_features(extra, model_state, t) for t in views[:2])
      value = pair_loss(*pair)
      return value, (model_state, new_extra, {"loss": value})
    n = z.shape[0]
    ids = jnp.arange(n, dtype=jnp.int32)
    labels = jnp.stack([ids] * num_positive + ([ids + n] if len(views) == 3 else []), axis=1)
    if queue_size:
      queue_labels = jnp.arange(queue_size, dtype=jnp.int32) + 2 * n
      value = on_mesh(_labelled_supcon, mesh, num_inputs=4, **hyper)(z, labels, extra["queue"], queue_labels)
      (_, keys) = model.apply({"params": extra["key_params"], **model_state}, anchors, train=False)
      queue, ptr = enqueue(extra["queue"], extra["queue_ptr"], jax.lax.stop_gradient(keys))
      new_extra = {**extra, "queue": queue, "queue_ptr": ptr}
    else:
      value = on_mesh(_labelled_supcon, mesh, num_inputs=2, **hyper)(z, labels)
    return value, (model_state, new_extra, {"loss": value})

  def embed_text(params, model_state, batch) -> jax.Array:
    h, _ = model.apply({"params": params, **model_state}, text_tokens(batch), train=False, project=False)
    return h

  key_encoder = {"after_update": momentum_update(momentum)} if queue_size else {}
  return Method(init=init, loss_fn=loss_fn, predict_fns={"embed_text": embed_text}, **key_encoder)

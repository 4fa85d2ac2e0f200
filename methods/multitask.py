"""Multi-task and hybrid (CoCa-style) training: one shared image encoder, several heads, a weighted sum of objectives.

Heads (each enabled by its config.model entry) and the outputs they give `losses.combine`:
- projection (SimCLR on two augmented views):          z1, z2 [B, D]
- text tower + projections (CLIP / SigLIP on captions): image_emb, text_emb [B, E], logit_scale (, logit_bias)
- classifier (supervised, model.num_classes > 0):       class_logits [B, 1, C], class_targets [B, 1]
- caption decoder (generative, needs a ViT encoder):    caption_logits [B, L-1, V], caption_targets, caption_mask
config.loss.terms maps a name to a `losses.combine` term, e.g. clip=dict(name="clip_softmax_loss", weight=1.0,
inputs=("image_emb", "text_emb", "logit_scale"), kwargs=dict(mode="dense")); the loss is sum_k weight_k * loss_k.
CoCa (Yu et al. 2022) is the text tower + caption decoder with clip + caption terms: its decoder cross-attends to the
image tokens and decodes captions at evaluation (decode_greedy; decode_contrastive: contrastive search, Su et al.
2022). Contrastive and classification heads see the clean image, the SimCLR head its two augmented views.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

import losses
import models
from models.two_tower import l2_normalize
from input_pipeline import augment_jax
import tokenization
from methods.base import Method, model_spec, normalize_images, on_mesh


class MultiTaskModel(nn.Module):
  """Shared image encoder (registry name + kwargs) and the optional heads of the module docstring."""

  image: dict
  projection: dict | None = None
  text: dict | None = None
  embed_dim: int = 64
  logit_scale_init: float = math.log(1 / 0.07)
  logit_bias_init: float | None = None
  num_classes: int = 0
  decoder: dict | None = None

  def setup(self):
    self.image_encoder = models.build(self.image)
    if self.projection:
      self.projection_head = models.build({"name": "projection_head", **self.projection})
    if self.text:
      self.text_encoder = models.build(self.text)
      self.image_proj = nn.Dense(self.embed_dim, use_bias=False)
      self.text_proj = nn.Dense(self.embed_dim, use_bias=False)
      self.logit_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), ())
      if self.logit_bias_init is not None:
        self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias_init), ())
    if self.num_classes:
      self.classifier = nn.Dense(self.num_classes)
    if self.decoder:
      self.caption_decoder = models.build({"name": "caption_decoder", **self.decoder})

  def encode(self, images, *, train: bool):
    """Pooled features [B, F] and, with a decoder, the image tokens [B, N, F] it cross-attends to (else None)."""
    if self.decoder:
      return self.image_encoder(images, train=train, return_tokens=True)
    return self.image_encoder(images, train=train), None

  def project(self, h, *, train: bool):
    return self.projection_head(h, train=train)

  def image_embedding(self, h):
    return l2_normalize(self.image_proj(h).astype(jnp.float32))

  def text_embedding(self, tokens, *, train: bool):
    return l2_normalize(self.text_proj(self.text_encoder(tokens, train=train)).astype(jnp.float32))

  def scalars(self) -> dict:
    out = {"logit_scale": jnp.exp(self.logit_scale)}
    if self.logit_bias_init is not None:
      out["logit_bias"] = self.logit_bias
    return out

  def classify(self, h):
    return self.classifier(h).astype(jnp.float32)

  def caption_logits(self, tokens, image_tokens, *, train: bool):
    return self.caption_decoder(tokens, image_tokens, train=train)

  def __call__(self, images, tokens, *, train: bool, views: int = 1):
    """Every enabled head's outputs. images: [B * views, H, W, 3] example-major, view 0 the clean image and views 1, 2
    the SimCLR views (views=3 needs the projection head); tokens: int32 [B, L] captions, or None without text heads.
    """
    h, image_tokens = self.encode(images, train=train)
    out: dict[str, Any] = {}
    if self.projection:
      z = self.project(h, train=train)
      if views == 3:
        z = z.reshape(-1, views, z.shape[-1])
        out.update(z1=z[:, 1], z2=z[:, 2])
    if views > 1:
      h = h.reshape(-1, views, h.shape[-1])[:, 0]
      image_tokens = None if image_tokens is None else image_tokens.reshape((-1, views) + image_tokens.shape[1:])[:, 0]
    out["features"] = h
    if self.text:
      out.update(image_emb=self.image_embedding(h), text_emb=self.text_embedding(tokens, train=train), **self.scalars())
    if self.num_classes:
      out["class_logits"] = self.classify(h)
    if self.decoder:
      out["caption_logits"] = self.caption_logits(tokens[:, :-1], image_tokens, train=train)
    return out


def combined_loss(terms: list[dict], mesh: Mesh, outputs: dict) -> tuple[jax.Array, dict]:
  """`losses.combine` on the mesh: batch outputs enter sharded, scalars (logit_scale, ...) replicated."""
  scalars = {k: v for k, v in outputs.items() if jnp.ndim(v) == 0}
  keys = sorted(k for k in outputs if k not in scalars)
  fn = lambda *xs, axis_name: losses.combine(terms, {**dict(zip(keys, xs)), **scalars}, axis_name=axis_name)
  return on_mesh(fn, mesh, num_inputs=len(keys))(*(outputs[k] for k in keys))


def _example_major(views: jax.Array) -> jax.Array:
  """[V, B, ...] -> [B * V, ...] with the V views of an example adjacent (they stay on its device)."""
  return jnp.swapaxes(views, 0, 1).reshape((-1,) + views.shape[2:])


def model_from_config(config) -> MultiTaskModel:
  """The model of config.model (configs/default.py `multitask_model`); a head is enabled by its entry (projection,
  text, decoder not None, num_classes > 0). The run's dtype and remat go to the image and text encoders."""
  m = config.model
  head = lambda block: None if block is None else block.to_dict()
  return MultiTaskModel(
    image=model_spec(m.image, m),
    projection=head(m.projection),
    text=None if m.text is None else model_spec(m.text, m),
    embed_dim=m.embed_dim,
    logit_scale_init=m.logit_scale_init,
    logit_bias_init=m.logit_bias_init,
    num_classes=m.num_classes,
    decoder=head(m.decoder),
  )


def build(config, mesh: Mesh) -> Method:
  model = model_from_config(config)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  terms = [dict(term, key=key) for key, term in config.loss.terms.to_dict().items()]
  augment = config.augment.to_dict() if model.projection else {}
  max_scale = config.model.max_logit_scale

  def init(rng, batch):
    tokens = batch["caption"][:2] if "caption" in batch else None
    variables = dict(model.init(rng, normalize_images(batch["image"][:2], mean, std), tokens, train=False))
    return variables.pop("params"), variables, {}

  def loss_fn(params, model_state, extra, batch, rng):
    images = batch["image"]
    views = 3 if model.projection else 1
    if model.projection:  # the clean image and two SimCLR views, example-major: [B * 3, S, S, 3]
      augmented = augment_jax.multi_view(jax.random.fold_in(rng, 0), images, 2, **augment)
      images = _example_major(jnp.concatenate([(images.astype(jnp.float32) / 255.0)[None], augmented]))
    out, new_state = model.apply(
      {"params": params, **model_state},
      normalize_images(images, mean, std),
      batch.get("caption"),
      train=True,
      views=views,
      mutable=list(model_state),
      rngs={"dropout": jax.random.fold_in(rng, 1)},
    )
    outputs = {k: v for k, v in out.items() if k != "features"}
    if model.text:
      outputs["logit_scale"] = jnp.minimum(outputs["logit_scale"], max_scale)
    if model.num_classes:
      outputs.update(class_logits=outputs["class_logits"][:, None], class_targets=batch["label"][:, None])
    if model.decoder:
      targets = batch["caption"][:, 1:]
      outputs.update(caption_targets=targets, caption_mask=(targets != 0).astype(jnp.float32))
    value, metrics = combined_loss(terms, mesh, outputs)
    metrics = {**{f"loss_{k}": v for k, v in metrics.items() if k != "total"}, "loss": value}
    if model.text:
      metrics["logit_scale"] = outputs["logit_scale"]
    return value, (dict(new_state), extra, metrics)

  variables = lambda params, model_state: {"params": params, **model_state}

  def features(params, model_state, batch):
    """(pooled features [b, F], image tokens [b, N, F] or None) of normalised images."""
    images = normalize_images(batch["image"], mean, std)
    return model.apply(variables(params, model_state), images, train=False, method="encode")

  def embed_image(params, model_state, batch) -> jax.Array:
    """The joint image-text embedding with a text tower (zero-shot, retrieval), else the pooled features."""
    h = features(params, model_state, batch)[0]
    return model.apply(variables(params, model_state), h, method="image_embedding") if model.text else h

  def embed_text(params, model_state, batch) -> jax.Array:
    return model.apply(variables(params, model_state), batch["text"], train=False, method="text_embedding")

  def classify(params, model_state, batch) -> jax.Array:
    return model.apply(variables(params, model_state), features(params, model_state, batch)[0], method="classify")

  def decode_greedy(params, model_state, batch) -> jax.Array:
    """Greedy captions, int32 [b, max_text_len], cross-attending to the image tokens."""
    image_tokens = features(params, model_state, batch)[1]
    return decoder.greedy_decode(params["caption_decoder"], image_tokens, max_len, tokenizer.bos_id, tokenizer.eos_id)

  def decode_contrastive(params, model_state, batch, *, top_k: int = 4, alpha: float = 0.6) -> jax.Array:
    """Contrastive-search captions (Su et al. 2022), int32 [b, max_text_len]: top_k candidates a step, degeneration
    penalty alpha (the captioning evaluation's options)."""
    image_tokens = features(params, model_state, batch)[1]
    return decoder.contrastive_search(
      params["caption_decoder"], image_tokens, max_len, tokenizer.bos_id, tokenizer.eos_id, top_k=top_k, alpha=alpha
    )

  predict_fns = {"embed_image": embed_image}
  if model.text:
    predict_fns["embed_text"] = embed_text
  if model.num_classes:
    predict_fns["classify"] = classify
  if model.decoder:
    decoder = models.build({"name": "caption_decoder", **model.decoder})
    tokenizer, max_len = tokenization.get(config.data.tokenizer, config.data.tokenizer_path), config.data.max_text_len
    predict_fns.update(decode_greedy=decode_greedy, decode_contrastive=decode_contrastive)
  return Method(init=init, loss_fn=loss_fn, predict_fns=predict_fns)

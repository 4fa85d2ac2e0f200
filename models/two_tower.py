"""Image-text two-tower model for CLIP (Radford et al., 2021) and SigLIP (Zhai et al., 2023)."""

import math
from typing import Any
from collections.abc import Mapping

import flax.linen as nn
import jax.numpy as jnp

from models.registry import get, register


def l2_normalize(x, axis: int = -1):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


PROJECTIONS = ("linear", "affine", "none")


@register("two_tower")
class TwoTower(nn.Module):
  """Image and text encoders (registry names + kwargs), each followed by a map to `embed_dim`.

  `__call__(images [B,H,W,3], tokens [B,L], *, train)` -> dict(image_features [B, E], text_features [B, E]
  (L2-normalised, float32), logit_scale (exp of the learnt log-scale, a scalar), logit_bias (scalar, or None)).
  CLIP: logit_scale_init = log(1/0.07), logit_bias_init = None. SigLIP: log(10) and -10.
  `image_projection` / `text_projection`: "linear" (bias-free, CLIP and the default), "affine" (with bias: SigLIP's
  text head) or "none" (the tower's features are the embedding: SigLIP's MAP-pooled image tower; width = embed_dim).
  Towers get `dtype` unless their kwargs name one.
  """

  image_encoder: str = "vit_tiny"
  image_kwargs: Mapping[str, Any] | None = None
  text_encoder: str = "text_transformer"
  text_kwargs: Mapping[str, Any] | None = None
  embed_dim: int = 512
  logit_scale_init: float = math.log(1 / 0.07)
  logit_bias_init: float | None = None
  image_projection: str = "linear"
  text_projection: str = "linear"
  dtype: Any = jnp.float32

  def setup(self):
    self.image_tower = get(self.image_encoder)(**{"dtype": self.dtype, **(self.image_kwargs or {})})
    self.text_tower = get(self.text_encoder)(**{"dtype": self.dtype, **(self.text_kwargs or {})})
    self.image_proj = self._projection(self.image_projection)
    self.text_proj = self._projection(self.text_projection)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), ())
    if self.logit_bias_init is not None:
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias_init), ())

  def _projection(self, kind: str):
    if kind not in PROJECTIONS:
      raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}")
    if kind == "none":
      return None
    return nn.Dense(self.embed_dim, use_bias=kind == "affine", dtype=self.dtype)

  def _project(self, proj, features, tower: str):
    if proj is not None:
      return proj(features).astype(jnp.float32)
    if features.shape[-1] != self.embed_dim:
      raise ValueError(f"{tower}_projection='none' needs a {tower} tower {self.embed_dim} wide, got {features.shape}")
    return features.astype(jnp.float32)

  def encode_image(self, images, *, train: bool, normalize: bool = True):
    """[B, H, W, 3] -> [B, embed_dim] float32."""
    z = self._project(self.image_proj, self.image_tower(images, train=train), "image")
    return l2_normalize(z) if normalize else z

  def encode_text(self, tokens, *, train: bool, normalize: bool = True):
    """int32 [B, L] -> [B, embed_dim] float32."""
    z = self._project(self.text_proj, self.text_tower(tokens, train=train), "text")
    return l2_normalize(z) if normalize else z

  def __call__(self, images, tokens, *, train: bool):
    return dict(
      image_features=self.encode_image(images, train=train),
      text_features=self.encode_text(tokens, train=train),
      logit_scale=jnp.exp(self.logit_scale),
      logit_bias=self.logit_bias if self.logit_bias_init is not None else None,
    )

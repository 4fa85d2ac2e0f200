"""Vision Transformer (Dosovitskiy et al., 2021): patch embedding, learnable positions, pre-LN blocks."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register
from models.transformer import Transformer, is_deterministic


@register("vit")
class ViT(nn.Module):
  """`__call__(x [B,H,W,3], *, train) -> [B, width]` float32; pool "cls" (class token) or "gap" (mean of tokens).

  With `return_tokens=True` returns `(pooled, tokens [B, N, width])`, the final-LN token sequence (cross-attention
  input of a captioning decoder). `mlp_dim` defaults to 4 * width.
  """

  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int | None = None
  pool: str = "cls"
  dropout_rate: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, return_tokens: bool = False):
    if self.pool not in ("cls", "gap"):
      raise ValueError(f"pool must be 'cls' or 'gap', got {self.pool!r}")
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="patch_embed")(
      jnp.asarray(x, self.dtype)
    )
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    if self.pool == "cls":
      cls = self.param("cls_token", nn.initializers.zeros, (1, 1, d))
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, x.shape[1], d))
    x = x + pos.astype(x.dtype)
    deterministic = is_deterministic(self, train, self.dropout_rate)
    x = nn.Dropout(self.dropout_rate, deterministic=deterministic)(x)
    x = Transformer(
      self.depth,
      self.num_heads,
      self.mlp_dim or 4 * self.width,
      self.dropout_rate,
      remat=self.remat,
      dtype=self.dtype,
      name="encoder",
    )(x, deterministic=deterministic)
    pooled = (x[:, 0] if self.pool == "cls" else jnp.mean(x, axis=1)).astype(jnp.float32)
    return (pooled, x) if return_tokens else pooled


@register("vit_tiny")
class ViTTiny(ViT):
  """CPU-test size: patch 4, width 64, depth 2, 2 heads."""

  patch_size: int = 4
  width: int = 64
  depth: int = 2
  num_heads: int = 2


@register("vit_s16")
class ViTS16(ViT):
  width: int = 384
  num_heads: int = 6


@register("vit_b16")
class ViTB16(ViT):
  pass

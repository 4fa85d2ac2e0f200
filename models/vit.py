"""Vision Transformer (Dosovitskiy et al., 2021): patch embedding, learnable positions, pre-LN blocks; pooled by
class token, mean or attention (MAP)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register
from models.transformer import MlpBlock, Transformer, is_deterministic

POOLS = ("cls", "gap", "map")


class MAPHead(nn.Module):
  """Multihead attention pooling (Lee et al., 2019; big_vision's MAPHead, SigLIP): a learnt probe token attends to
  the tokens [B, N, D], then a pre-LN MLP with a residual; -> [B, D].

  out = a + MLP(LN(a)), a = Attention(probe, tokens).
  """

  num_heads: int
  mlp_dim: int
  layer_norm_epsilon: float = 1e-6
  activation: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, _, d = x.shape
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d))
    probe = jnp.broadcast_to(probe.astype(x.dtype), (b, 1, d))
    x = nn.MultiHeadDotProductAttention(self.num_heads, dtype=self.dtype, name="attn")(probe, x)
    y = nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name="ln")(x)
    x = x + MlpBlock(self.mlp_dim, self.activation, dtype=self.dtype, name="mlp")(y)
    return x[:, 0]


@register("vit")
class ViT(nn.Module):
  """`__call__(x [B,H,W,3], *, train) -> [B, width]` float32; pool "cls" (class token), "gap" (mean of tokens) or
  "map" (attention pooling, `MAPHead`, as SigLIP), each after the final LayerNorm.

  With `return_tokens=True` returns `(pooled, tokens [B, N, width])`, the final-LN token sequence (cross-attention
  input of a captioning decoder). `mlp_dim` defaults to 4 * width. CLIP's layout: `patch_bias=False` (bias-free patch
  embedding), `ln_pre=True` (a LayerNorm on the embedded tokens before the blocks), `layer_norm_epsilon=1e-5`,
  `activation="quick_gelu"` for OpenAI's weights.
  """

  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int | None = None
  pool: str = "cls"
  patch_bias: bool = True
  ln_pre: bool = False
  layer_norm_epsilon: float = 1e-6
  activation: str = "gelu"
  dropout_rate: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, return_tokens: bool = False):
    if self.pool not in POOLS:
      raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
    p = self.patch_size
    x = nn.Conv(
      self.width,
      (p, p),
      strides=(p, p),
      padding="VALID",
      use_bias=self.patch_bias,
      dtype=self.dtype,
      name="patch_embed",
    )(jnp.asarray(x, self.dtype))
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    if self.pool == "cls":
      cls = self.param("cls_token", nn.initializers.zeros, (1, 1, d))
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, x.shape[1], d))
    x = x + pos.astype(x.dtype)
    if self.ln_pre:
      x = nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name="ln_pre")(x)
    deterministic = is_deterministic(self, train, self.dropout_rate)
    x = nn.Dropout(self.dropout_rate, deterministic=deterministic)(x)
    mlp_dim = self.mlp_dim or 4 * self.width
    x = Transformer(
      self.depth,
      self.num_heads,
      mlp_dim,
      self.dropout_rate,
      layer_norm_epsilon=self.layer_norm_epsilon,
      activation=self.activation,
      remat=self.remat,
      dtype=self.dtype,
      name="encoder",
    )(x, deterministic=deterministic)
    if self.pool == "map":
      pooled = MAPHead(
        self.num_heads, mlp_dim, self.layer_norm_epsilon, self.activation, dtype=self.dtype, name="map_head"
      )(x)
    else:
      pooled = x[:, 0] if self.pool == "cls" else jnp.mean(x, axis=1)
    pooled = pooled.astype(jnp.float32)
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

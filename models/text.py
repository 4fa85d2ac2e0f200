"""Text transformer for CLIP-style text towers and SimCSE: token embedding, learnable positions, pre-LN blocks."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register
from models.transformer import Transformer, is_deterministic

PAD_ID = 0


def mean_pool(x, valid):
  """Mean of x [B, L, D] over the positions where valid [B, L] is True -> [B, D] float32."""
  w = valid.astype(jnp.float32)[..., None]
  return jnp.sum(x.astype(jnp.float32) * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def last_token_pool(x, valid):
  """x [B, L, D] at the last valid position of each row (EOT of a right-padded sequence) -> [B, D] float32."""
  last = jnp.maximum(jnp.sum(valid, axis=1) - 1, 0)
  return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)


@register("text_transformer")
class TextTransformer(nn.Module):
  """`__call__(tokens int32 [B, L], *, train) -> [B, width]` float32; L <= context_length, pad id 0, right-padded.

  causal=True (CLIP / open_clip): causal self-attention, features of the last non-pad token (the EOT token).
  causal=False: bidirectional attention over the non-pad tokens, mean of their features.
  Dropout (embeddings, attention, residual branches) runs when train=True and a "dropout" rng is passed, so two
  calls on one batch give SimCSE's two views. `mlp_dim` defaults to 4 * width.
  """

  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  mlp_dim: int | None = None
  causal: bool = True
  dropout_rate: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, train: bool):
    length = tokens.shape[1]
    if length > self.context_length:
      raise ValueError(f"{length} tokens per row, more than context_length={self.context_length}")
    x = nn.Embed(
      self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02), dtype=self.dtype, name="token_embed"
    )(tokens)
    pos = self.param("pos_embed", nn.initializers.normal(0.01), (self.context_length, self.width))
    x = x + pos[:length].astype(x.dtype)
    valid = tokens != PAD_ID
    mask = nn.make_causal_mask(tokens) if self.causal else nn.make_attention_mask(valid, valid)
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
    )(x, mask, deterministic=deterministic)
    return last_token_pool(x, valid) if self.causal else mean_pool(x, valid)

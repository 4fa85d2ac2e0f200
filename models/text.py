"""Text transformer for CLIP-style text towers and SimCSE: token embedding, learnable positions, pre-LN blocks."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register
from models.transformer import dropout_and_stack, embed_tokens

PAD_ID = 0


def mean_pool(x, valid):
  """Mean of x [B, L, D] over the positions where valid [B, L] is True -> [B, D] float32."""
  w = valid.astype(jnp.float32)[..., None]
  return jnp.sum(x.astype(jnp.float32) * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def last_token_pool(x, valid):
  """x [B, L, D] at the last valid position of each row (EOT of a right-padded sequence) -> [B, D] float32."""
  return position_pool(x, jnp.maximum(jnp.sum(valid, axis=1) - 1, 0))


def position_pool(x, index):
  """x [B, L, D] at position index [B] of each row -> [B, D] float32."""
  return jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0].astype(jnp.float32)


# Pooling by name: "last_non_pad" and "mean" read pad id 0; the others read no padding at all.
POOLS = ("last_non_pad", "mean", "first_eos", "argmax", "last")


@register("text_transformer")
class TextTransformer(nn.Module):
  """`__call__(tokens int32 [B, L], *, train) -> [B, width]` float32; L <= context_length, pad id 0, right-padded.

  causal=True (CLIP / open_clip): causal self-attention, features of the last non-pad token (the EOT token).
  causal=False: bidirectional attention over the non-pad tokens, mean of their features.
  Dropout (embeddings, attention, residual branches) runs when train=True and a "dropout" rng is passed, so two
  calls on one batch give SimCSE's two views. `mlp_dim` defaults to 4 * width.

  `pool` overrides the pooling that `causal` implies ("last_non_pad" if causal else "mean"): "first_eos" takes the
  first position holding `eos_id` (Hugging Face CLIP, whose pad id may equal its EOS id), "argmax" the position of
  the largest id (HF CLIP configs with the legacy eos_token_id 2), "last" the final position (SigLIP, which pads to a
  fixed length). `mask_padding=False` lets non-causal attention see pad tokens too (SigLIP is trained that way).
  `layer_norm_epsilon` and `activation` (models.transformer.ACTIVATIONS) as in the ViT.
  """

  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  mlp_dim: int | None = None
  causal: bool = True
  pool: str | None = None
  eos_id: int | None = None
  mask_padding: bool = True
  layer_norm_epsilon: float = 1e-6
  activation: str = "gelu"
  dropout_rate: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, train: bool):
    length = tokens.shape[1]
    pool = self.pool or ("last_non_pad" if self.causal else "mean")
    if pool not in POOLS or (pool == "first_eos" and self.eos_id is None):
      raise ValueError(f"pool must be one of {POOLS} ('first_eos' with eos_id), got {pool!r}, eos_id={self.eos_id}")
    x = embed_tokens(self, tokens, "context_length", pos_std=0.01)
    valid = tokens != PAD_ID
    if self.causal:
      mask = nn.make_causal_mask(tokens)
    else:
      mask = nn.make_attention_mask(valid, valid) if self.mask_padding else None
    x = dropout_and_stack(
      self, x, mask, train=train, name="encoder", layer_norm_epsilon=self.layer_norm_epsilon, activation=self.activation
    )
    if pool == "mean":
      return mean_pool(x, valid)
    if pool == "last_non_pad":
      return last_token_pool(x, valid)
    # argmax returns the first maximum: the first EOS of a row (HF pads CLIP with its EOS id).
    index = {
      "first_eos": lambda: jnp.argmax(tokens == self.eos_id, axis=1),
      "argmax": lambda: jnp.argmax(tokens, axis=1),
      "last": lambda: jnp.full(tokens.shape[:1], length - 1),
    }[pool]()
    return position_pool(x, index)

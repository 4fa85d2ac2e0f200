"""Captioning decoder for contrastive + generative hybrids (CoCa, Yu et al., 2022): a causal text transformer whose
blocks also cross-attend to image tokens."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.registry import register
from models.text import PAD_ID
from models.transformer import Transformer, is_deterministic


@register("caption_decoder")
class CaptionDecoder(nn.Module):
  """`__call__(tokens int32 [B, L], image_tokens [B, N, D_img], *, train) -> logits [B, L, vocab_size]` float32.

  Position i predicts token i+1 (teacher forcing: feed `tokens[:, :-1]`, score against `tokens[:, 1:]`).
  `greedy_decode` generates captions from image tokens with these parameters.
  """

  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  depth: int = 6
  num_heads: int = 8
  mlp_dim: int | None = None
  dropout_rate: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, image_tokens, *, train: bool):
    length = tokens.shape[1]
    if length > self.context_length:
      raise ValueError(f"{length} tokens per row, more than context_length={self.context_length}")
    x = nn.Embed(
      self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02), dtype=self.dtype, name="token_embed"
    )(tokens)
    pos = self.param("pos_embed", nn.initializers.normal(0.01), (self.context_length, self.width))
    x = x + pos[:length].astype(x.dtype)
    deterministic = is_deterministic(self, train, self.dropout_rate)
    x = nn.Dropout(self.dropout_rate, deterministic=deterministic)(x)
    x = Transformer(
      self.depth,
      self.num_heads,
      self.mlp_dim or 4 * self.width,
      self.dropout_rate,
      cross_attention=True,
      remat=self.remat,
      dtype=self.dtype,
      name="decoder",
    )(x, nn.make_causal_mask(tokens), deterministic=deterministic, context=jnp.asarray(image_tokens, self.dtype))
    return nn.Dense(self.vocab_size, dtype=self.dtype, name="head")(x).astype(jnp.float32)

  def greedy_decode(self, params, image_tokens, max_len: int, bos_id: int, eos_id: int):
    """Greedy captions [B, max_len] int32: bos_id, then the argmax tokens up to and including eos_id, then pad (0).

    Recomputes the whole prefix each step (no KV cache): O(max_len^2) work, fine for short captions. Jittable
    with max_len, bos_id and eos_id static.
    """
    b = image_tokens.shape[0]
    tokens = jnp.full((b, max_len), PAD_ID, jnp.int32).at[:, 0].set(bos_id)

    def step(i, carry):
      tokens, done = carry
      logits = self.apply({"params": params}, tokens, image_tokens, train=False)
      next_token = jnp.argmax(logits[:, i], axis=-1).astype(jnp.int32)
      tokens = tokens.at[:, i + 1].set(jnp.where(done, PAD_ID, next_token))
      return tokens, done | (next_token == eos_id)

    tokens, _ = jax.lax.fori_loop(0, max_len - 1, step, (tokens, jnp.zeros((b,), bool)))
    return tokens

"""Captioning decoder for contrastive + generative hybrids (CoCa, Yu et al., 2022): a causal text transformer whose
blocks also cross-attend to image tokens; greedy and contrastive-search decoding. Repetition of decoded captions is
measured by evaluators/captioning.py (`repeated_ngram_rate`)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.registry import register
from models.text import PAD_ID
from models.transformer import dropout_and_stack, embed_tokens


@register("caption_decoder")
class CaptionDecoder(nn.Module):
  """`__call__(tokens int32 [B, L], image_tokens [B, N, D_img], *, train) -> logits [B, L, vocab_size]` float32.

  Position i predicts token i+1 (teacher forcing: feed `tokens[:, :-1]`, score against `tokens[:, 1:]`). With
  `return_hidden=True` also returns the last layer's hidden states [B, L, width] (contrastive search compares them).
  `greedy_decode` and `contrastive_search` generate captions from image tokens with these parameters.
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
  def __call__(self, tokens, image_tokens, *, train: bool, return_hidden: bool = False):
    x = embed_tokens(self, tokens, "context_length", pos_std=0.01)
    image_tokens = jnp.asarray(image_tokens, self.dtype)
    mask = nn.make_causal_mask(tokens)
    x = dropout_and_stack(self, x, mask, train=train, name="decoder", context=image_tokens, cross_attention=True)
    logits = nn.Dense(self.vocab_size, dtype=self.dtype, name="head")(x).astype(jnp.float32)
    return (logits, x.astype(jnp.float32)) if return_hidden else logits

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

  def contrastive_search(
    self, params, image_tokens, max_len: int, bos_id: int, eos_id: int, *, top_k: int = 4, alpha: float = 0.6
  ):
    """Contrastive-search captions [B, max_len] int32, laid out as `greedy_decode`'s (Su et al. 2022, eq. 5).

    At each step the top_k most probable next tokens v are scored by
      (1 - alpha) p(v | x_<t) - alpha max_{j < t} cos(h_v, h_j),
    h the last layer's hidden states (h_v that of v appended to the prefix, h_j those of the prefix tokens), and the
    best is kept: the degeneration penalty steers away from tokens whose representation repeats the context.
    alpha = 0 is greedy decoding. Each step runs the decoder once on the B * top_k candidate sequences, which also
    gives the next step's probabilities; no KV cache, like `greedy_decode`. Jittable with every argument but
    params and image_tokens static. The paper's defaults: top_k in [3, 10], alpha in [0.5, 0.8] (0.6 for GPT-2).
    """
    if not 0.0 <= alpha <= 1.0 or top_k < 1:
      raise ValueError(f"need 0 <= alpha <= 1 and top_k >= 1, got alpha={alpha}, top_k={top_k}")
    b = image_tokens.shape[0]
    rows = jnp.arange(b)
    candidate_images = jnp.repeat(image_tokens, top_k, axis=0)
    tokens = jnp.full((b, max_len), PAD_ID, jnp.int32).at[:, 0].set(bos_id)
    first_logits = self.apply({"params": params}, tokens, image_tokens, train=False)[:, 0]

    def step(i, carry):
      tokens, done, logits = carry
      top_p, top_ids = jax.lax.top_k(jax.nn.softmax(logits), top_k)  # [b, k]
      candidates = jnp.repeat(tokens, top_k, axis=0).at[:, i + 1].set(top_ids.reshape(-1))
      cand_logits, hidden = self.apply(
        {"params": params}, candidates, candidate_images, train=False, return_hidden=True
      )
      hidden = hidden / jnp.maximum(jnp.linalg.norm(hidden, axis=-1, keepdims=True), 1e-12)
      hidden = hidden.reshape(b, top_k, max_len, -1)
      # Causal attention: the prefix's states are the same in every candidate row.
      cosine = jnp.einsum("bkd,bjd->bkj", hidden[:, :, i + 1], hidden[:, 0])
      penalty = jnp.max(jnp.where(jnp.arange(max_len) <= i, cosine, -jnp.inf), axis=-1)
      best = jnp.argmax((1 - alpha) * top_p - alpha * penalty, axis=-1)
      next_token = top_ids[rows, best]
      tokens = tokens.at[:, i + 1].set(jnp.where(done, PAD_ID, next_token))
      next_logits = cand_logits.reshape(b, top_k, max_len, -1)[rows, best, i + 1]
      return tokens, done | (next_token == eos_id), next_logits

    tokens, _, _ = jax.lax.fori_loop(0, max_len - 1, step, (tokens, jnp.zeros((b,), bool), first_logits))
    return tokens

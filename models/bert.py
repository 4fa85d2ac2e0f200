"""BERT encoder (Devlin et al., 2019) as used by sentence-transformers (e.g. all-MiniLM-L6-v2): word + absolute
position + token-type embeddings, post-LN transformer blocks with exact GELU, mean pooling over non-pad tokens.
`models.convert.load_bert` fills it from a Hugging Face checkpoint."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register
from models.text import PAD_ID, mean_pool
from models.transformer import dropout_and_stack, embed_tokens


@register("bert")
class Bert(nn.Module):
  """`__call__(tokens int32 [B, L], *, train, token_types=None) -> [B, width]` float32 mean of the final hidden
  states over the non-pad (id 0) tokens; pad tokens are also masked out of attention. `return_tokens=True`
  returns `(pooled, hidden [B, L, width])`. Defaults are all-MiniLM-L6-v2's sizes (BERT-base: width 768, depth 12,
  mlp_dim 3072). Dropout as in the text transformer: only with train=True and a "dropout" rng.
  """

  vocab_size: int = 30522
  max_positions: int = 512
  type_vocab_size: int = 2
  width: int = 384
  depth: int = 6
  num_heads: int = 12
  mlp_dim: int | None = 1536
  layer_norm_epsilon: float = 1e-12
  dropout_rate: float = 0.1
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, train: bool, token_types=None, return_tokens: bool = False):
    token_types = jnp.zeros_like(tokens) if token_types is None else token_types
    x = embed_tokens(self, tokens, "max_positions", pos_std=0.02, token_types=token_types)
    x = nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name="ln_embed")(x)
    valid = tokens != PAD_ID
    mask = nn.make_attention_mask(valid, valid)
    x = dropout_and_stack(
      self, x, mask, train=train, name="encoder", norm_first=False, layer_norm_epsilon=self.layer_norm_epsilon
    )
    pooled = mean_pool(x, valid)
    return (pooled, x) if return_tokens else pooled

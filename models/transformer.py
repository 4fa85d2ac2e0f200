"""The transformer block and encoder stack shared by the ViT, the text transformer and the BERT encoder; the text
towers' token embedding and dropout + stack (text transformer, BERT, captioning decoder)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (Hendrycks & Gimpel 2016), elementwise.

  Written out because `jax.nn.gelu(approximate=False)` lowers to a slower expression on XLA:CPU: forward + backward
  of a [4096, 1024] array took 26 ms against 4.6 ms for this form (equal to 5e-7).
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1.0 / np.sqrt(2.0), x.dtype)))


def gelu_tanh(x: jax.Array) -> jax.Array:
  """GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): SigLIP, torch's gelu_pytorch_tanh."""
  return jax.nn.gelu(x, approximate=True)


def quick_gelu(x: jax.Array) -> jax.Array:
  """x * sigmoid(1.702 x), the GELU approximation of OpenAI's CLIP checkpoints (Radford et al., 2021)."""
  return x * jax.nn.sigmoid(np.asarray(1.702, x.dtype) * x)


# MLP activations by name; Hugging Face's hidden_act names map onto these in models/hf_clip.py.
ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "quick_gelu": quick_gelu}


class MlpBlock(nn.Module):
  """Dense(mlp_dim) -> activation (default exact GELU; see ACTIVATIONS) -> Dense(back to the input width)."""

  mlp_dim: int
  activation: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"unknown activation {self.activation!r}; known: {', '.join(ACTIVATIONS)}")
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), name=name)
    y = ACTIVATIONS[self.activation](dense(self.mlp_dim, "fc1")(x))
    return dense(x.shape[-1], "fc2")(y)


class TransformerBlock(nn.Module):
  """Self-attention + MLP, each with a residual connection, LayerNorm before (`norm_first`, pre-LN: ViT, CLIP)
  or after the residual sum (post-LN: BERT). `mask`: bool, broadcastable to [B, heads, L, L], True = attend.
  With `cross_attention`, a pre-LN cross-attention to `context` [B, N, D_ctx] sits between the two (a captioning
  decoder's block). Dropout on the attention probabilities and on each branch output, off when `deterministic`.
  `activation` names the MLP's nonlinearity (ACTIVATIONS).
  """

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  norm_first: bool = True
  layer_norm_epsilon: float = 1e-6
  cross_attention: bool = False
  activation: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, deterministic: bool, context=None):
    ln = lambda name: nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name=name)
    attention = lambda name: nn.MultiHeadDotProductAttention(
      self.num_heads, dtype=self.dtype, dropout_rate=self.dropout_rate, deterministic=deterministic, name=name
    )
    mlp = MlpBlock(self.mlp_dim, self.activation, dtype=self.dtype, name="mlp")
    drop = nn.Dropout(self.dropout_rate, deterministic=deterministic)
    if not self.norm_first:
      if self.cross_attention:
        raise ValueError("cross_attention needs norm_first=True")
      x = ln("ln1")(x + drop(attention("attn")(x, mask=mask)))
      return ln("ln2")(x + drop(mlp(x)))
    x = x + drop(attention("attn")(ln("ln1")(x), mask=mask))
    if self.cross_attention:
      x = x + drop(attention("cross_attn")(ln("ln_cross")(x), context))
    return x + drop(mlp(ln("ln2")(x)))


class Transformer(nn.Module):
  """`depth` TransformerBlocks named block0..block{depth-1}; pre-LN stacks end with a LayerNorm ("ln_final").

  `__call__(x [B, L, D], mask, *, deterministic, context=None) -> [B, L, D]`. `remat` recomputes each block's activations
  in the backward pass (nn.remat): parameters keep the same names, so checkpoints move between the two.
  """

  depth: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  norm_first: bool = True
  layer_norm_epsilon: float = 1e-6
  cross_attention: bool = False
  activation: str = "gelu"
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, *, deterministic: bool, context=None):
    # static_argnums counts `self` as 0: `deterministic` is argument 3.
    block_cls = nn.remat(TransformerBlock, static_argnums=(3,)) if self.remat else TransformerBlock
    for i in range(self.depth):
      x = block_cls(
        self.num_heads,
        self.mlp_dim,
        self.dropout_rate,
        self.norm_first,
        self.layer_norm_epsilon,
        self.cross_attention,
        self.activation,
        self.dtype,
        name=f"block{i}",
      )(x, mask, deterministic, context)
    if self.norm_first:
      x = nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name="ln_final")(x)
    return x


def is_deterministic(module: nn.Module, train: bool, dropout_rate: float) -> bool:
  """Dropout runs only when training, with a nonzero rate, and when the caller passed a "dropout" rng."""
  return not (train and dropout_rate > 0 and module.has_rng("dropout"))


def embed_tokens(
  module: nn.Module, tokens: jax.Array, positions_field: str, pos_std: float, token_types: jax.Array | None = None
) -> jax.Array:
  """A text tower's input: token_embed(tokens) [+ type_embed(token_types)] + pos_embed[:L] -> [B, L, module.width].

  tokens (and token_types) int32 [B, L]; call inside `module`'s compact `__call__`, so the parameters are its own:
  `token_embed` [module.vocab_size, width] and `type_embed` [module.type_vocab_size, width] ~ N(0, 0.02),
  `pos_embed` [max, width] ~ N(0, pos_std), max = the module's field `positions_field` (L above it: ValueError).
  """
  max_positions = getattr(module, positions_field)
  length = tokens.shape[1]
  if length > max_positions:
    raise ValueError(f"{length} tokens per row, more than {positions_field}={max_positions}")
  embed = lambda n, name: nn.Embed(  # noqa: E731
    n, module.width, embedding_init=nn.initializers.normal(0.02), dtype=module.dtype, name=name
  )
  x = embed(module.vocab_size, "token_embed")(tokens)
  if token_types is not None:
    x = x + embed(module.type_vocab_size, "type_embed")(token_types)
  pos = module.param("pos_embed", nn.initializers.normal(pos_std), (max_positions, module.width))
  return x + pos[:length].astype(x.dtype)


def dropout_and_stack(
  module: nn.Module, x: jax.Array, mask: jax.Array | None, *, train: bool, name: str, context=None, **options
) -> jax.Array:
  """Dropout on the embeddings x [B, L, D], then `module`'s Transformer stack (named `name`) -> [B, L, D].

  Reads the module's depth, num_heads, mlp_dim (None: 4 * width), dropout_rate, remat and dtype; `options` are the
  stack's other fields (norm_first, layer_norm_epsilon, activation, cross_attention). Call inside the module's
  compact `__call__`. Dropout runs as `is_deterministic` says.
  """
  deterministic = is_deterministic(module, train, module.dropout_rate)
  x = nn.Dropout(module.dropout_rate, deterministic=deterministic)(x)
  stack = Transformer(
    module.depth,
    module.num_heads,
    module.mlp_dim or 4 * module.width,
    module.dropout_rate,
    remat=module.remat,
    dtype=module.dtype,
    name=name,
    **options,
  )
  return stack(x, mask, deterministic=deterministic, context=context)

"""Temporal encoder for time series: TS2Vec's dilated convolutional encoder (Yue et al. 2022), at small widths."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register


@register("temporal_conv")
class TemporalConvEncoder(nn.Module):
  """`__call__(x [B, T, C], *, train) -> [B, out_dim]` float32: max over time of per-timestep representations.

  Input projection to `width`, then `depth` residual blocks of two GELU + 'same' convolutions with kernel
  `kernel_size` and dilation 2**i (block i: the receptive field doubles per block), then a per-timestep linear map to
  `out_dim` (TS2Vec: width 64, depth 10, out_dim 320, kernel 3, its last block widening to out_dim instead; instance
  embedding by max pooling over time).
  With `return_tokens=True` returns `(pooled, per_timestep [B, T, out_dim])`, TS2Vec's timestamp-level output.
  """

  width: int = 64
  out_dim: int = 320
  depth: int = 10
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, return_tokens: bool = False):
    del train  # no dropout or batch norm
    h = nn.Dense(self.width, dtype=self.dtype, name="input_fc")(jnp.asarray(x, self.dtype))
    conv = lambda features, dilation, name: nn.Conv(
      features, (self.kernel_size,), kernel_dilation=(dilation,), padding="SAME", dtype=self.dtype, name=name
    )
    for i in range(self.depth):
      y = conv(self.width, 2**i, f"block{i}_conv1")(nn.gelu(h))
      h = h + conv(self.width, 2**i, f"block{i}_conv2")(nn.gelu(y))
    tokens = nn.Dense(self.out_dim, dtype=self.dtype, name="output_fc")(nn.gelu(h)).astype(jnp.float32)
    pooled = jnp.max(tokens, axis=1)
    return (pooled, tokens) if return_tokens else pooled

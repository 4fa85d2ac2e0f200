"""Pixel propagation module of PixPro (Xie et al. 2021): smooths each pixel's feature over similar pixels."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register


def _normalize(x, eps: float = 1e-12):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@register("pixel_propagation")
class PixelPropagation(nn.Module):
  """`__call__(x [B, P, C], *, train) -> y [B, P, C]` float32, over the P pixels of one feature map each.

  y_i = sum_j s(x_i, x_j) g(x_j) / ||g(x_j)||, s(x_i, x_j) = max(cos(x_i, x_j), 0) ** gamma (Xie et al. 2021,
  eqs. 2-3; gamma = 2). g, the value transform, has `transform_layers` = 0 (identity), 1 (linear, PixPro's default)
  or 2 (Linear -> BN -> ReLU -> Linear) layers.
  """

  gamma: float = 2.0
  transform_layers: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.transform_layers not in (0, 1, 2):
      raise ValueError(f"transform_layers must be 0, 1 or 2, got {self.transform_layers}")
    x = jnp.asarray(x, self.dtype)
    width = x.shape[-1]
    value = x
    if self.transform_layers == 2:
      value = nn.Dense(width, use_bias=False, dtype=self.dtype, name="value_fc0")(value)
      value = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name="value_bn0")(value))
    if self.transform_layers >= 1:
      value = nn.Dense(width, dtype=self.dtype, name=f"value_fc{self.transform_layers - 1}")(value)
    unit = _normalize(x)
    similarity = jnp.maximum(jnp.einsum("bpc,bqc->bpq", unit, unit), 0.0) ** self.gamma
    return jnp.einsum("bpq,bqc->bpc", similarity, _normalize(value)).astype(jnp.float32)

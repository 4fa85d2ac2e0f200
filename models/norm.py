"""Batch normalisation with the activation and residual add fused into one custom VJP that saves only its input.

`BatchNorm` holds the parameters and statistics of `nn.BatchNorm` ("scale", "bias"; batch_stats "mean", "var") and
computes out = act(BN(y) + residual). Autodiff of nn.BatchNorm followed by relu keeps the centred input y - mean
besides y (and XLA recomputes the masks from y, so both stay live until the backward pass): with the next layer's
input that is three activation-sized arrays per layer. `batch_norm_train` keeps y and the per-channel statistics, and
recomputes the normalised values in the backward pass (elementwise, fused by XLA), as torch's BatchNorm does: two
arrays per layer with the next convolution's input. Variance is the two-pass E[(y - mean)^2], not E[y^2] - mean^2.
"""

import functools
from typing import Any
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def _stats_dtype(y):
  return jnp.promote_types(y.dtype, jnp.float32)


def _normalized(y, mean, inv, scale, bias, residual, relu: bool, dtype):
  """act((y - mean) * inv * scale + bias + residual) in `dtype`; per-channel vectors broadcast over the last axis."""
  z = (y.astype(mean.dtype) - mean) * (inv * scale) + bias
  if residual is not None:
    z = z + residual
  return jnp.asarray(jax.nn.relu(z) if relu else z, dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def batch_norm_train(y, scale, bias, residual, epsilon: float, relu: bool, dtype) -> tuple[jax.Array, ...]:
  """Training-mode batch norm over all axes but the last, with an optional residual add and ReLU.

  y [..., C], scale and bias [C], residual [..., C] or None -> (out [..., C] in `dtype`, mean [C], var [C]).
  out = act((y - mean) / sqrt(var + epsilon) * scale + bias + residual), mean and var the (biased) batch statistics
  (Ioffe & Szegedy, 2015). The statistics are returned for the running averages and carry no gradient.
  """
  return _batch_norm_fwd(y, scale, bias, residual, epsilon, relu, dtype)[0]


def _batch_norm_fwd(y, scale, bias, residual, epsilon, relu, dtype):
  axes = tuple(range(y.ndim - 1))
  yf = y.astype(_stats_dtype(y))
  mean = jnp.mean(yf, axes)
  var = jnp.mean(jnp.square(yf - mean), axes)
  inv = jax.lax.rsqrt(var + epsilon)
  out = _normalized(y, mean, inv, scale, bias, residual, relu, dtype)
  # The ReLU mask comes from the output, which the next layer keeps anyway; y and the statistics are the only saves
  # (plus a scalar giving the residual's dtype).
  residual_dtype = None if residual is None else jnp.zeros((), residual.dtype)
  return (out, mean, var), (y, mean, inv, scale, out if relu else None, residual_dtype)


def _batch_norm_bwd(epsilon, relu, dtype, saved, cotangents):
  y, mean, inv, scale, out, residual_dtype = saved
  g = cotangents[0].astype(mean.dtype)
  if relu:
    g = jnp.where(out > 0, g, 0.0)
  axes = tuple(range(y.ndim - 1))
  count = y.size // y.shape[-1]
  x_hat = (y.astype(mean.dtype) - mean) * inv
  dbias = jnp.sum(g, axes)
  dscale = jnp.sum(g * x_hat, axes)
  dy = (scale * inv) * (g - (dbias + x_hat * dscale) / count)
  dresidual = None if residual_dtype is None else g.astype(residual_dtype.dtype)
  return dy.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype), dresidual


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """nn.BatchNorm over all axes but the last, followed by an optional residual add and ReLU:
  `__call__(y [..., C], residual=None, *, relu=False) -> [..., C]` = act(BN(y) + residual).

  Same parameters, statistics and running-average update as nn.BatchNorm (`momentum` is the running averages'
  decay); in training mode its backward pass keeps only y and the statistics (`batch_norm_train`).
  """

  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, y, residual=None, *, relu: bool = False):
    features = y.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
    dtype = self.dtype or jnp.result_type(y, scale, bias)
    if self.use_running_average:
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
      return _normalized(y, ra_mean.value, inv, scale, bias, residual, relu, dtype)
    out, mean, var = batch_norm_train(y, scale, bias, residual, self.epsilon, relu, dtype)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return out

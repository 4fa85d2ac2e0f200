"""Heads on top of encoder features: SimCLR projection, BYOL prediction, SwAV prototypes, SimSkip MLP encoder.

All take `__call__(h [B, D_in], *, train) -> [B, out]` and return float32.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models.registry import register


@register("projection_head")
class ProjectionHead(nn.Module):
  """SimCLR MLP (Chen et al., 2020), as lightly's SimCLRProjectionHead: (Linear -> BN -> ReLU) x (num_layers-1)
  -> Linear. Hidden linears have no bias when BN follows; `use_bn=False` gives Linear -> ReLU layers.
  """

  hidden_dim: int = 2048
  out_dim: int = 128
  num_layers: int = 2
  use_bn: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, *, train: bool):
    x = jnp.asarray(h, self.dtype)
    for i in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, use_bias=not self.use_bn, dtype=self.dtype, name=f"fc{i}")(x)
      if self.use_bn:
        x = nn.BatchNorm(
          use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype, name=f"bn{i}"
        )(x)
      x = nn.relu(x)
    x = nn.Dense(self.out_dim, dtype=self.dtype, name=f"fc{self.num_layers - 1}")(x)
    return x.astype(jnp.float32)


@register("prediction_head")
class PredictionHead(ProjectionHead):
  """BYOL predictor (Grill et al., 2020): Linear(4096) -> BN -> ReLU -> Linear(256)."""

  hidden_dim: int = 4096
  out_dim: int = 256


@register("prototypes")
class Prototypes(nn.Module):
  """SwAV prototypes (Caron et al., 2020): scores [B, K] = normalize(z) @ C, C [D, K] a bias-free linear layer.

  SwAV keeps each prototype (column of C) on the unit sphere: apply `normalize_prototypes` to this module's
  parameters after every optimizer step (and once after init).
  """

  num_prototypes: int = 3000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, *, train: bool):
    del train
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    scores = nn.Dense(self.num_prototypes, use_bias=False, dtype=self.dtype, name="prototypes")(z)
    return scores.astype(jnp.float32)


def normalize_prototypes(params: dict) -> dict:
  """Re-normalises every prototype to unit L2 norm. `params`: a `Prototypes` module's params
  ({"prototypes": {"kernel": [D, K]}}); returns the same tree with the columns of the kernel normalised."""
  kernel = params["prototypes"]["kernel"]
  kernel = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
  return {**params, "prototypes": {"kernel": kernel}}


@register("mlp_encoder")
class MLPEncoder(nn.Module):
  """SimSkip refiner (Liu et al., 2024): out = x + MLP(x) when `out_dim` equals the input width, else MLP(x);
  the MLP is a `ProjectionHead` (BN off by default). `out_dim=None` keeps the input width.

  `zero_init_residual=True` scales the residual branch by a learned per-feature gain initialised to zero,
  out = x + gamma * MLP(x) (ReZero, Bachlechner et al. 2020; LayerScale, Touvron et al. 2021), so training starts
  at the identity: the refined embeddings equal the inputs at step 0 and move only as far as the loss pulls them.
  """

  hidden_dim: int = 1024
  out_dim: int | None = None
  num_layers: int = 2
  use_bn: bool = False
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    out_dim = self.out_dim or x.shape[-1]
    skip = out_dim == x.shape[-1]
    if self.zero_init_residual and not skip:
      raise ValueError(f"zero_init_residual needs the skip connection: out_dim={out_dim} != input width {x.shape[-1]}.")
    y = ProjectionHead(self.hidden_dim, out_dim, self.num_layers, self.use_bn, dtype=self.dtype, name="mlp")(
      x, train=train
    )
    if self.zero_init_residual:
      y = y * self.param("residual_scale", nn.initializers.zeros, (out_dim,), jnp.float32)
    return x.astype(jnp.float32) + y if skip else y

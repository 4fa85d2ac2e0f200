"""ResNet v1.5 (He et al., 2016; stride on the 3x3 conv) with an ImageNet or a CIFAR stem, NHWC.

`resnet18_cifar` has the layer shapes of the peers' torch `ResNet18Cifar` (../shared/peers/resnet_cifar_torch.py):
11,168,832 parameters including BatchNorm scales and biases.
"""

from functools import partial
from typing import Any
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from models import conv as conv_lib
from models.norm import BatchNorm
from models.registry import register

# torchvision's ResNet init: He normal over fan-out.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ResidualBlock(nn.Module):
  """The fields of a residual block: its width, the stride of its strided conv, whether the residual branch's last
  BN scale starts at zero, and the conv / norm constructors (ResNet's `_conv` and BatchNorm partials)."""

  features: int
  strides: int
  zero_init_residual: bool
  conv: Any
  norm: Any


class BasicBlock(ResidualBlock):
  """Two 3x3 convs; the residual branch ends in a BN whose scale starts at zero when `zero_init_residual`."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.features, 3, self.strides, name="conv1")(x)
    y = _norm_relu_conv(self, y, "bn1", "conv2", self.features, 3, 1)
    scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    return self.norm(name="bn2", scale_init=scale_init)(y, _shortcut(self, x, self.features), relu=True)


class BottleneckBlock(ResidualBlock):
  """1x1 reduce, 3x3 (strided), 1x1 expand to 4x `features`."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.features, 1, 1, name="conv1")(x)
    y = _norm_relu_conv(self, y, "bn1", "conv2", self.features, 3, self.strides)
    y = _norm_relu_conv(self, y, "bn2", "conv3", 4 * self.features, 1, 1)
    scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    return self.norm(name="bn3", scale_init=scale_init)(y, _shortcut(self, x, 4 * self.features), relu=True)


def _norm_relu_conv_fn(block, y, norm: str, conv: str, features: int, kernel_size: int, strides: int):
  return block.conv(features, kernel_size, strides, name=conv)(block.norm(name=norm)(y, relu=True))


# BN -> ReLU -> conv inside a block, with the conv's input recomputed in the backward pass from the BN's input and
# statistics (elementwise) instead of kept: the backward then keeps one activation-sized array for the pair (the BN's
# input) instead of two. Same parameters (the submodules keep their names), values and gradients. ResNet-18 SimCLR
# step, 512 images: XLA's temporaries 2894 -> 2417 MB, peak RSS 3.75 -> 3.1 GB, step time within noise
# (benchmarks/README.md). The block's output stays kept: it is the next block's residual.
_norm_relu_conv = nn.remat(_norm_relu_conv_fn, static_argnums=(2, 3, 4, 5, 6))


def _shortcut(block: ResidualBlock, x, features: int):
  """Identity, or a strided 1x1 conv + BN when the shape changes (torch's `downsample`)."""
  if block.strides == 1 and x.shape[-1] == features:
    return x
  x = block.conv(features, 1, block.strides, name="proj_conv")(x)
  return block.norm(name="proj_bn")(x)


def _conv(features: int, kernel_size: int, strides: int, *, name: str, dtype, impl: str = "xla") -> nn.Module:
  """Bias-free k x k conv padded (k-1)//2 on every side as torch pads; XLA's "SAME" would pad a stride-2 conv
  of an even-sized input only at the end. `impl`: the lowering (models.conv), same parameters either way."""
  pad = (kernel_size - 1) // 2
  return conv_lib.get(impl)(
    features,
    (kernel_size, kernel_size),
    strides=(strides, strides),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    kernel_init=conv_init,
    dtype=dtype,
    name=name,
  )


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


@register("resnet")
class ResNet(nn.Module):
  """ResNet backbone: `__call__(x [B,H,W,3], *, train) -> [B, D]` globally average-pooled float32 features;
  `pool=False` returns the last stage's feature map [B, h, w, D] (float32) instead, for dense (per-pixel) methods.

  D = width * 2**(len(stage_sizes) - 1), times 4 for bottleneck blocks. stem "imagenet": 7x7/2 conv + 3x3/2 max-pool;
  "cifar": 3x3/1 conv, no pool. BatchNorm statistics live in the "batch_stats" collection; there is no
  `axis_name`: under jit on globally sharded batches GSPMD already reduces them over the whole batch.
  Params are float32, compute runs in `dtype`. `zero_init_residual` (Goyal et al., 2017) starts every residual
  branch at zero; off by default, as in the torch peer.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  block: str = "basic"
  stem: str = "imagenet"
  zero_init_residual: bool = False
  bn_momentum: float = 0.9  # torch momentum 0.1
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  # models.conv: "winograd" / "blocked" are faster on CPU hosts, on one or several devices; "auto" picks winograd on
  # CPU only.
  # Checkpoints are interchangeable between lowerings.
  conv_impl: str = "xla"
  remat: bool = False  # recompute each block's activations in the backward pass (same parameters and outputs)

  @nn.compact
  def __call__(self, x, *, train: bool, pool: bool = True):
    if self.block not in BLOCKS:
      raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
    conv = partial(_conv, dtype=self.dtype, impl=self.conv_impl)
    # models.norm.BatchNorm: nn.BatchNorm's parameters and statistics, the ReLU and residual add fused into a
    # backward pass that keeps only the normalised layer's input (a third less activation memory).
    norm = partial(
      BatchNorm, use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype
    )
    x = jnp.asarray(x, self.dtype)
    if self.stem == "imagenet":
      x = conv(self.width, 7, 2, name="stem_conv")(x)
      x = norm(name="stem_bn")(x, relu=True)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "cifar":
      x = conv(self.width, 3, 1, name="stem_conv")(x)
      x = norm(name="stem_bn")(x, relu=True)
    else:
      raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
    block_cls = nn.remat(BLOCKS[self.block]) if self.remat else BLOCKS[self.block]
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = block_cls(
          self.width * 2**i,
          strides=2 if i > 0 and j == 0 else 1,
          zero_init_residual=self.zero_init_residual,
          conv=conv,
          norm=norm,
          name=f"stage{i + 1}_block{j + 1}",
        )(x)
    x = x.astype(jnp.float32)
    return jnp.mean(x, axis=(1, 2)) if pool else x


@register("resnet18")
class ResNet18(ResNet):
  stage_sizes: Sequence[int] = (2, 2, 2, 2)


@register("resnet50")
class ResNet50(ResNet):
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"


@register("resnet18_cifar")
class ResNet18Cifar(ResNet):
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  stem: str = "cifar"


@register("resnet50_cifar")
class ResNet50Cifar(ResNet):
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  stem: str = "cifar"


@register("resnet_tiny_cifar")
class ResNetTinyCifar(ResNet):
  """One basic block per stage, 16 base channels: a CPU-test-sized ResNet (D = 128)."""

  stage_sizes: Sequence[int] = (1, 1, 1, 1)
  width: int = 16
  stem: str = "cifar"

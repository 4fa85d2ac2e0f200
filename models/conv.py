"""Convolution lowerings, by name: XLA's own ("xla", `nn.Conv`), cache-blocked ("blocked", `BlockedConv`), or "auto"
(blocked on CPU, XLA's on GPU/TPU, where XLA's convolutions are the fast ones).

Both modules take the same constructor arguments and hold the same parameters ("kernel" [kh, kw, C_in, C_out], optional
"bias" [C_out]), so a checkpoint trained with one loads into the other; `get(impl)` returns the class.

Why "blocked": on XLA:CPU a convolution's weight gradient is lowered to a convolution whose window is the whole image,
plus transposes of the activations; in a ResNet-18 step on a 2-core host these took about 60% of the time. The blocked
lowering computes the weight gradient as im2col(x)^T @ dy, and every pass (forward, input and weight gradient) over
blocks of a few images at a time (`lax.map` / `lax.scan`), so each block's patches and outputs stay in the CPU caches.
With the batch sharded over several devices, each loop step takes one block of every device's rows and the weight
gradient is carried as per-device partial sums, so no collective runs inside a loop (per-block all-reduces there hung
XLA:CPU's rendezvous with two host devices); the partial sums are reduced once, after the loop.
"""

import functools
import math
from typing import Any
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

Padding = str | Sequence[tuple[int, int]]
_NHWC = ("NHWC", "HWIO", "NHWC")


def im2col_patches(
  x: jax.Array, kernel_size: Sequence[int], strides: Sequence[int], padding: Sequence[tuple[int, int]]
) -> jax.Array:
  """x [B, H, W, C] -> patches [B, H_out, W_out, kh * kw * C], ordered (kh, kw, C) as a flattened HWIO kernel.

  Each kernel tap is a strided slice of the padded input; the taps are concatenated on the channel axis.
  """
  (kh, kw), (sh, sw) = kernel_size, strides
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  h_out, w_out = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  taps = [
    x[:, i : i + sh * (h_out - 1) + 1 : sh, j : j + sw * (w_out - 1) + 1 : sw] for i in range(kh) for j in range(kw)
  ]
  return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _conv(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def _images_per_block(batch: int, pixels_per_image: int, block_rows: int) -> int:
  """The largest divisor of `batch` whose block has at most `block_rows` output pixels (at least one image)."""
  size = max(1, min(batch, block_rows // max(pixels_per_image, 1)))
  while batch % size:
    size -= 1
  return size


def _layout(batch: int, pixels_per_image: int, block_rows: int) -> tuple[int, int]:
  """(shards, images per shard and block): the batch splits into `shards` contiguous row ranges, one per device
  when the batch is sharded over all devices, and each range into blocks of at most `block_rows` output pixels."""
  shards = math.gcd(batch, jax.device_count())
  return shards, _images_per_block(batch // shards, pixels_per_image, block_rows)


def _blocks(x: jax.Array, shards: int, size: int) -> jax.Array:
  """[B, ...] -> [num_blocks, shards, size, ...]: block i holds rows i * size ... (i + 1) * size - 1 of every shard's
  contiguous range, so with the batch sharded over devices each device loops over its own rows only."""
  x = x.reshape((shards, -1, size) + x.shape[1:])
  return x.swapaxes(0, 1)


def _unblocks(x: jax.Array) -> jax.Array:
  """Inverse of `_blocks`."""
  return x.swapaxes(0, 1).reshape((-1,) + x.shape[3:])


def _merge(x: jax.Array) -> jax.Array:
  """[shards, size, ...] -> [shards * size, ...]."""
  return x.reshape((-1,) + x.shape[2:])


def _per_block(fn: Callable, shards: int, size: int, *arrays: jax.Array) -> jax.Array:
  """fn over blocks of `size` rows of every shard of each array, one block after the other (lax.map); the outputs
  in the original order."""
  if shards * size == arrays[0].shape[0]:
    return fn(*arrays)
  blocks = tuple(_blocks(a, shards, size) for a in arrays)
  out = jax.lax.map(lambda block: fn(*map(_merge, block)), blocks)
  return _unblocks(out.reshape((out.shape[0], shards, size) + out.shape[2:]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_blocked(
  x: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, int],
  padding: tuple[tuple[int, int], ...],
  block_rows: int = 1024,
) -> jax.Array:
  """2-D convolution (cross-correlation, as lax.conv_general_dilated) in blocks of images, with an im2col weight
  gradient. x [B, H, W, C_in], kernel [kh, kw, C_in, C_out] -> [B, H_out, W_out, C_out].

  The batch is viewed as S = gcd(B, device count) contiguous shards (the devices' rows when the batch is sharded
  over them) and each shard as blocks of at most `block_rows` output pixels (at least one image); a loop step takes
  one block of every shard. Forward: XLA's convolution per block. Backward: dkernel = sum over shards of (sum over
  blocks of im2col(x_block)^T @ dy_block), the per-shard partial sums [S, kh*kw*C_in, C_out] carried through the
  loop so that the only cross-device reduction comes after it; dx per block by the transposed convolution (stride 1)
  or as the transpose of im2col applied to dy_block @ kernel^T (strided). Only x and the kernel are kept for the
  backward pass, as for a native convolution.
  """
  return _conv_blocked_fwd(x, kernel, strides, padding, block_rows)[0]


def _conv_blocked_fwd(x, kernel, strides, padding, block_rows):
  kh, kw = kernel.shape[:2]
  h_out = (x.shape[1] + sum(padding[0]) - kh) // strides[0] + 1
  w_out = (x.shape[2] + sum(padding[1]) - kw) // strides[1] + 1
  shards, size = _layout(x.shape[0], h_out * w_out, block_rows)
  return _per_block(lambda xb: _conv(xb, kernel, strides, padding), shards, size, x), (x, kernel)


def _conv_blocked_bwd(strides, padding, block_rows, residuals, dy):
  x, kernel = residuals
  kh, kw, c_in, c_out = kernel.shape
  shards, size = _layout(dy.shape[0], dy.shape[1] * dy.shape[2], block_rows)
  patches = lambda xb: im2col_patches(xb, (kh, kw), strides, padding)
  flat_kernel = kernel.reshape(kh * kw * c_in, c_out)

  def add_block(dkernel, block):
    # [shards, size, ...] blocks: the contraction stays within each shard (a batched matmul over shards), so a
    # sharded batch needs no collective inside the loop.
    xb, dyb = block
    xb_patches = patches(_merge(xb)).reshape(xb.shape[:2] + dyb.shape[2:4] + (-1,))
    return dkernel + jnp.einsum("sbhwk,sbhwo->sko", xb_patches, dyb, preferred_element_type=jnp.float32), None

  zeros = jnp.zeros((shards,) + flat_kernel.shape, jnp.float32)
  blocks = (_blocks(x, shards, size), _blocks(dy, shards, size))
  if blocks[0].shape[0] == 1:
    partial_dkernel, _ = add_block(zeros, (blocks[0][0], blocks[1][0]))
  else:
    partial_dkernel, _ = jax.lax.scan(add_block, zeros, blocks)
  dkernel = jnp.sum(partial_dkernel, axis=0)

  if tuple(strides) == (1, 1):
    # The input gradient of a stride-1 convolution is a stride-1 convolution of dy with the flipped, transposed
    # kernel: XLA's fast forward path, unlike the dilated form autodiff would emit for strided convolutions.
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kh, kw), padding))
    dx = _per_block(lambda dyb: _conv(dyb, flipped, (1, 1), pads), shards, size, dy)
  else:

    def input_grad(xb, dyb):
      _, im2col_transpose = jax.vjp(patches, xb)
      return im2col_transpose(jnp.einsum("bhwo,ko->bhwk", dyb, flat_kernel))[0]

    dx = _per_block(input_grad, shards, size, x, dy)
  return dx.astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)


conv_blocked.defvjp(_conv_blocked_fwd, _conv_blocked_bwd)


def _explicit_padding(
  padding: Padding, kernel_size: Sequence[int], strides: Sequence[int], spatial: Sequence[int]
) -> tuple[tuple[int, int], ...]:
  """(low, high) padding per spatial dim for "SAME"/"VALID" or explicit pairs, as nn.Conv pads."""
  if isinstance(padding, str):
    return tuple(jax.lax.padtype_to_pads(spatial, kernel_size, strides, padding.upper()))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


class BlockedConv(nn.Module):
  """Drop-in for `nn.Conv` on NHWC inputs (2-D, no dilation, no feature groups) computed by `conv_blocked`:
  `__call__(x [B, H, W, C_in]) -> [B, H_out, W_out, features]`, the same parameters as nn.Conv."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  block_rows: int = 1024

  @nn.compact
  def __call__(self, x):
    kernel_size, strides = tuple(self.kernel_size), tuple(self.strides or (1, 1))
    if len(kernel_size) != 2 or x.ndim != 4:
      raise ValueError(f"BlockedConv is 2-D NHWC only; got kernel_size {kernel_size} and input shape {x.shape}")
    kernel = self.param("kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    padding = _explicit_padding(self.padding, kernel_size, strides, x.shape[1:3])
    if isinstance(x.shape[0], int):
      y = conv_blocked(x, kernel, strides, padding, self.block_rows)
    else:  # a symbolic batch (jax.export's shape polymorphism) cannot be cut into blocks: XLA's convolution
      y = _conv(x, kernel, strides, padding)
    return y + bias if bias is not None else y


IMPLS: dict[str, type[nn.Module]] = {"xla": nn.Conv, "blocked": BlockedConv}


def get(impl: str) -> type[nn.Module]:
  """The conv module class of a lowering: "xla" (nn.Conv), "blocked" (BlockedConv) or "auto" (blocked when JAX's
  default backend is the CPU, else nn.Conv)."""
  if impl == "auto":
    impl = "blocked" if jax.default_backend() == "cpu" else "xla"
  if impl not in IMPLS:
    raise ValueError(f"conv_impl must be one of {sorted(IMPLS) + ['auto']}, got {impl!r}")
  return IMPLS[impl]

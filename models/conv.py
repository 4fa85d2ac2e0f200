"""Convolution lowerings, by name: XLA's own ("xla", `nn.Conv`), cache-blocked ("blocked", `BlockedConv`), blocked with
Winograd 3x3 layers ("winograd", `WinogradConv`), or "auto" (winograd on CPU, XLA's on GPU/TPU, where XLA's
convolutions are the fast ones).

All three modules take the same constructor arguments and hold the same parameters ("kernel" [kh, kw, C_in, C_out],
optional "bias" [C_out]), so a checkpoint trained with one loads into the other; `get(impl)` returns the class.

Why "blocked": on XLA:CPU a convolution's weight gradient is lowered to a convolution whose window is the whole image,
plus transposes of the activations; in a ResNet-18 step on a 2-core host these took about 60% of the time. The blocked
lowering computes the weight gradient as im2col(x)^T @ dy, and every pass (forward, input and weight gradient) over
blocks of a few images at a time (a `fori_loop` over dynamic slices, writing each block's result in place), so each
block's patches and outputs stay in the CPU caches; the backward pass computes both gradients of a block in one loop
step, so each block of dy is read once.
With the batch sharded over several devices, each loop step takes one block of every device's rows and the weight
gradient is carried as per-device partial sums, so no collective runs inside a loop (per-block all-reduces there hung
XLA:CPU's rendezvous with two host devices); the partial sums are reduced once, after the loop.

Why "winograd": the blocked ResNet-18 step already ran its convolutions near the CPU's matrix-product rate, so the
remaining gain is in doing fewer multiplies. Winograd F(2x2, 3x3) computes a 3x3 stride-1 layer with 4 instead of 9
multiplies per output pixel and channel pair (16 products [tiles, C_in] @ [C_in, C_out] per block, additions around
them), in the same blocks and shard layout as the blocked lowering; strided, 1x1 and narrow (< 64 input channels)
layers stay blocked. The SimCLR ResNet-18 step: 1.4x the blocked lowering (2-core Zen 4; benchmarks/README.md).
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


def _shard_rows(x: jax.Array, shards: int) -> jax.Array:
  """[B, ...] -> [shards, B / shards, ...]: shard s holds the contiguous rows of device s (a reshape, no copy)."""
  return x.reshape((shards, -1) + x.shape[1:])


def _take_block(x: jax.Array, i, size: int) -> jax.Array:
  """Block i of `size` rows of every shard of x [shards, rows, ...] -> [shards * size, ...]."""
  block = jax.lax.dynamic_slice_in_dim(x, i * size, size, axis=1)
  return block.reshape((-1,) + block.shape[2:])


def _per_block(fn: Callable, shards: int, size: int, *arrays: jax.Array):
  """Runs fn over blocks of `size` rows of every shard of each array, one block after the other.

  fn(*blocks) -> (rows [shards * size, ...], partial [shards, ...]); returns (the rows of all blocks in the original
  order, the sum of the partials over blocks). The blocks are dynamic slices of the inputs and each block's rows are
  written in place into one output buffer (a fori_loop carry): no blocked copy of an input, no stacked copy of the
  outputs.
  """
  if shards * size == arrays[0].shape[0]:
    return fn(*arrays)
  split = [_shard_rows(a, shards) for a in arrays]
  rows = split[0].shape[1]
  out, part = jax.eval_shape(fn, *(_take_block(a, 0, size) for a in split))
  out_shape = (shards, rows) + out.shape[1:]

  def body(i, carry):
    acc, total = carry
    y, partial = fn(*(_take_block(a, i, size) for a in split))
    acc = jax.lax.dynamic_update_slice_in_dim(acc, y.reshape((shards, size) + y.shape[1:]), i * size, axis=1)
    return acc, jax.tree.map(jnp.add, total, partial)

  # Every row of the output buffer is overwritten, so it starts as a broadcast of any value: one of the last input,
  # which (unlike a constant zero) XLA cannot share between loops and keep alive for the whole step.
  start = jnp.broadcast_to(arrays[-1].reshape(-1)[0].astype(out.dtype), out_shape)
  init = (start, jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), part))
  result, total = jax.lax.fori_loop(0, rows // size, body, init)
  return result.reshape((-1,) + out_shape[2:]), total


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
  y, _ = _per_block(lambda xb: (_conv(xb, kernel, strides, padding), ()), shards, size, x)
  return y, (x, kernel)


def _conv_blocked_bwd(strides, padding, block_rows, residuals, dy):
  x, kernel = residuals
  kh, kw, c_in, c_out = kernel.shape
  shards, size = _layout(dy.shape[0], dy.shape[1] * dy.shape[2], block_rows)
  patches = lambda xb: im2col_patches(xb, (kh, kw), strides, padding)
  flat_kernel = kernel.reshape(kh * kw * c_in, c_out)
  # The input gradient of a stride-1 convolution is a stride-1 convolution of dy with the flipped, transposed
  # kernel: XLA's fast forward path, unlike the dilated form autodiff would emit for strided convolutions.
  flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
  pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kh, kw), padding))

  def block_grads(xb, dyb):
    """(dx, per-shard dkernel) of one block: both gradients in one pass, so each dy block is read once and dies."""
    if tuple(strides) == (1, 1):
      xb_patches, dxb = patches(xb), _conv(dyb, flipped, (1, 1), pads)
    else:
      xb_patches, im2col_transpose = jax.vjp(patches, xb)
      dxb = im2col_transpose(jnp.einsum("bhwo,ko->bhwk", dyb, flat_kernel))[0]
    # The contraction stays within each shard (a batched matmul over shards): a sharded batch needs no collective
    # inside the loop.
    dkernel = jnp.einsum(
      "sbhwk,sbhwo->sko", _shard_rows(xb_patches, shards), _shard_rows(dyb, shards), preferred_element_type=jnp.float32
    )
    return dxb, dkernel

  dx, partial_dkernel = _per_block(block_grads, shards, size, x, dy)
  dkernel = jnp.sum(partial_dkernel, axis=0)
  return dx.astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)


conv_blocked.defvjp(_conv_blocked_fwd, _conv_blocked_bwd)


# Winograd F(2x2, 3x3) (Lavin & Gray, 2016): a 3x3 stride-1 convolution computed on 4x4 input tiles (stride 2) as 16
# matrix products [tiles, C_in] @ [C_in, C_out] in a transformed domain, 4 multiplies per output pixel and channel pair
# instead of 9. The transforms are additions only; the kernel transform has the halves of G.
def _winograd_rows(a0, a1, a2, a3):
  """B^T applied to 4 rows (or columns) of a tile: the input transform along one axis."""
  return [a0 - a2, a1 + a2, a2 - a1, a1 - a3]


def _winograd_input(x: jax.Array) -> jax.Array:
  """x [B, H, W, C] (H, W even; padded by 1 here) -> the transformed 4x4 tiles [16, B * H/2 * W/2, C]."""
  b, h, w, c = x.shape
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  tiles = []
  for rows in _winograd_rows(*(x[:, r : r + h : 2] for r in range(4))):
    tiles += _winograd_rows(*(rows[:, :, s : s + w : 2] for s in range(4)))
  return jnp.stack(tiles).reshape(16, -1, c)


def _winograd_output(m: jax.Array, b: int, h: int, w: int) -> jax.Array:
  """A^T m A: the products [16, B * H/2 * W/2, C_out] -> the output [B, H, W, C_out] (each tile gives 2x2 pixels)."""
  m = m.reshape(4, 4, b, h // 2, w // 2, -1)
  rows = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])
  pixels = [jnp.stack((r[0] + r[1] + r[2], r[1] - r[2] - r[3]), axis=3) for r in rows]  # [B, H/2, W/2, 2, C_out]
  return jnp.stack(pixels, axis=2).reshape(b, h, w, -1)


def _winograd_kernel_rows(g0, g1, g2):
  """G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]] applied to 3 rows (or columns) of a kernel."""
  half_sum, half_g1 = 0.5 * (g0 + g2), 0.5 * g1
  return [g0, half_sum + half_g1, half_sum - half_g1, g2]


def _winograd_kernel(kernel: jax.Array) -> jax.Array:
  """G g G^T: kernel [3, 3, C_in, C_out] -> [16, C_in, C_out], as sums of [C_in, C_out] slices (an einsum with G
  lowers on XLA:CPU to transposes and [C_in * C_out * 3, 3] @ [3, 4] products at ~1 GFLOP/s: 23 vs 3 ms at 512
  channels, forward and backward of every step)."""
  taps = []
  for rows in _winograd_kernel_rows(*(kernel[i] for i in range(3))):
    taps += _winograd_kernel_rows(*(rows[j] for j in range(3)))
  return jnp.stack(taps)


def _winograd_block(xb: jax.Array, u: jax.Array) -> jax.Array:
  products = jnp.einsum("tpc,tco->tpo", _winograd_input(xb), u, preferred_element_type=jnp.float32)
  return _winograd_output(products.astype(xb.dtype), *xb.shape[:3])


def winograd_applies(x_shape: Sequence[int], kernel_size, strides, padding) -> bool:
  """Whether `conv_winograd` computes this convolution: 3x3, stride 1, padding 1 on each side, even H and W."""
  return (
    tuple(kernel_size) == (3, 3)
    and tuple(strides) == (1, 1)
    and tuple(map(tuple, padding)) == ((1, 1), (1, 1))
    and x_shape[1] % 2 == 0
    and x_shape[2] % 2 == 0
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_winograd(x: jax.Array, kernel: jax.Array, block_rows: int = 1024) -> jax.Array:
  """3x3 stride-1 "SAME" convolution of x [B, H, W, C_in] (H, W even) by Winograd F(2x2, 3x3), in blocks of images
  as `conv_blocked` (the same shard and block layout). Equal to lax.conv_general_dilated up to float rounding (the
  transforms add up to 4 terms before and after the products; relative differences ~1e-6 in float32).

  Backward per block: the products' gradient is the output transform's transpose of dy, dU += d^T @ dM per shard
  (16 products), dd = dM @ U^T and dx the input transform's transpose of dd; the kernel gradient is the kernel
  transform's transpose of the summed dU. Only x and the kernel are kept for the backward pass.
  """
  return _conv_winograd_fwd(x, kernel, block_rows)[0]


def _conv_winograd_fwd(x, kernel, block_rows):
  b, h, w, _ = x.shape
  u = _winograd_kernel(kernel)
  shards, size = _layout(b, h * w, block_rows)
  y, _ = _per_block(lambda xb: (_winograd_block(xb, u), ()), shards, size, x)
  return y, (x, kernel)


def _conv_winograd_bwd(block_rows, residuals, dy):
  x, kernel = residuals
  b, h, w, _ = x.shape
  u = _winograd_kernel(kernel)
  shards, size = _layout(b, h * w, block_rows)

  def block_grads(xb, dyb):
    tiles = _winograd_input(xb)
    products = jax.ShapeDtypeStruct(tiles.shape[:2] + (u.shape[-1],), dyb.dtype)
    (dm,) = jax.linear_transpose(lambda m: _winograd_output(m, *xb.shape[:3]), products)(dyb)
    by_shard = lambda a: a.reshape((16, shards, -1, a.shape[-1]))
    du = jnp.einsum("tspc,tspo->stco", by_shard(tiles), by_shard(dm), preferred_element_type=jnp.float32)
    (dxb,) = jax.linear_transpose(_winograd_input, xb)(jnp.einsum("tpo,tco->tpc", dm, u).astype(xb.dtype))
    return dxb, du

  dx, partial_du = _per_block(block_grads, shards, size, x, dy)
  (dkernel,) = jax.linear_transpose(_winograd_kernel, kernel)(jnp.sum(partial_du, axis=0).astype(kernel.dtype))
  return dx.astype(x.dtype), dkernel


conv_winograd.defvjp(_conv_winograd_fwd, _conv_winograd_bwd)


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
  # 3x3 stride-1 "SAME" convolutions with at least this many input channels by Winograd F(2x2, 3x3)
  # (`conv_winograd`); None: never (the "blocked" lowering), as few channels gain nothing from the transforms.
  winograd_min_channels: int | None = None

  @nn.compact
  def __call__(self, x):
    kernel_size, strides = tuple(self.kernel_size), tuple(self.strides or (1, 1))
    if len(kernel_size) != 2 or x.ndim != 4:
      raise ValueError(f"BlockedConv is 2-D NHWC only; got kernel_size {kernel_size} and input shape {x.shape}")
    kernel = self.param("kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    padding = _explicit_padding(self.padding, kernel_size, strides, x.shape[1:3])
    winograd = (
      self.winograd_min_channels is not None
      and x.shape[-1] >= self.winograd_min_channels
      and winograd_applies(x.shape, kernel_size, strides, padding)
    )
    if not isinstance(x.shape[0], int):
      # A symbolic batch (jax.export's shape polymorphism) cannot be cut into blocks: XLA's convolution.
      y = _conv(x, kernel, strides, padding)
    elif winograd:
      y = conv_winograd(x, kernel, self.block_rows)
    else:
      y = conv_blocked(x, kernel, strides, padding, self.block_rows)
    return y + bias if bias is not None else y


class WinogradConv(BlockedConv):
  """`BlockedConv` with its 3x3 stride-1 "SAME" convolutions of >= 64 input channels by Winograd F(2x2, 3x3)
  (ResNet-18 SimCLR step, 2-core Zen 4: 1.4x the blocked lowering; no gain on a width-16 ResNet, so narrower layers
  keep the blocked lowering)."""

  winograd_min_channels: int | None = 64


IMPLS: dict[str, type[nn.Module]] = {"xla": nn.Conv, "blocked": BlockedConv, "winograd": WinogradConv}


def get(impl: str) -> type[nn.Module]:
  """The conv module class of a lowering: "xla" (nn.Conv), "blocked" (BlockedConv), "winograd" (WinogradConv) or
  "auto" (winograd when JAX's default backend is the CPU, else nn.Conv)."""
  if impl == "auto":
    impl = "winograd" if jax.default_backend() == "cpu" else "xla"
  if impl not in IMPLS:
    raise ValueError(f"conv_impl must be one of {sorted(IMPLS) + ['auto']}, got {impl!r}")
  return IMPLS[impl]

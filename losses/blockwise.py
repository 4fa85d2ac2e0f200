"""Row reductions of a pairwise logit matrix that is never materialised.

For local x [n, D], y [n, D] and the global Y [N, D] (all devices' y, in device order), with
logits z_ij = t x_i . y_j + b, computes per local row
  logsumexp:  r_i = log sum_j exp(z_ij)
  softplus:   r_i = sum_j softplus(z_ij)
over all N columns, and with `symmetric=True` also the same reduction of y_i against X.
These are the only global terms of the CLIP softmax and SigLIP sigmoid losses (their
positives are local), so those losses are a few lines on top of this.

Modes:
  dense:   all-gather and form the full [n, N] logits; plain autodiff.
  chunked: stream the columns in blocks; each step all-gathers `chunk_size // W` rows from
           each of the W devices, so a device holds a [n, <= chunk_size] logit block.
  ring:    each device's rows travel around the ring in chunks of `chunk_size` rows with
           `ppermute` (W hops per chunk), so a device holds a [n, chunk_size] block.
chunked and ring have a custom VJP: the backward pass recomputes the logits block by block
(as flash attention does) and returns column gradients to their owners (a reduce-scatter
per block for chunked; an accumulator that travels home with its chunk for ring). Besides
one logit block, a device keeps only its inputs and their gradient accumulators, O(n D),
in both passes. A last partial chunk is handled by overlapping it with the previous one
and masking the repeated rows, so any chunk size works.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from losses import collectives

MODES = ("dense", "chunked", "ring")
REDUCTIONS = ("logsumexp", "softplus")


def pairwise_reduce(
  x: jax.Array,
  y: jax.Array,
  scale,
  bias=0.0,
  *,
  reduction: str,
  symmetric: bool = False,
  mode: str = "dense",
  chunk_size: int | None = None,
  axis_name: str | None = None,
):
  """r_xy [n] (and r_yx [n] if symmetric), in at least float32, as in the module docstring."""
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  if mode == "dense":
    reduce = jax.nn.logsumexp if reduction == "logsumexp" else lambda z, axis: jnp.sum(jax.nn.softplus(z), axis)
    logits = lambda a, b: _dot(scale * a, collectives.all_gather(b, axis_name)) + bias
    r_xy = reduce(logits(x, y), axis=1)
    return (r_xy, reduce(logits(y, x), axis=1)) if symmetric else r_xy
  # The scalars enter the custom VJP as per-device values, so their cotangents are the
  # local partial sums and autodiff adds the psum over devices.
  device_zero = jnp.zeros_like(x[0, 0], dtype=_acc_dtype(x))
  return _streamed(x, y, device_zero + scale, device_zero + bias, reduction, symmetric, mode, chunk_size, axis_name)


def _acc_dtype(x):
  """Accumulation dtype: at least float32 (bfloat16 inputs), float64 under x64."""
  return jnp.promote_types(x.dtype, jnp.float32)


def _dot(a, b):
  """a @ b.T accumulated in at least float32."""
  return jnp.dot(a, b.T, preferred_element_type=_acc_dtype(a))


class _Plan:
  """Static chunking of the n local rows: S chunks of `rows` rows; the last one is moved
  back to end at row n (overlapping its predecessor) and its repeated rows are masked."""

  def __init__(self, mode, chunk_size, n, axis_name):
    self.w = collectives.axis_size(axis_name)
    if chunk_size is None:
      rows = n
    elif mode == "chunked":  # each of the W devices contributes `rows` rows to a block
      rows = max(1, chunk_size // self.w)
    else:
      rows = chunk_size
    self.rows = min(n, rows)
    self.steps = math.ceil(n / self.rows)
    self.n = n

  def start(self, k):
    return jnp.minimum(k * self.rows, self.n - self.rows)

  def valid(self, k):
    return self.start(k) + jnp.arange(self.rows) >= k * self.rows

  def take(self, a, k):
    return jax.lax.dynamic_slice_in_dim(a, self.start(k), self.rows)

  def add(self, acc, part, k):
    start = self.start(k)
    return jax.lax.dynamic_update_slice_in_dim(
      acc, jax.lax.dynamic_slice_in_dim(acc, start, self.rows) + part, start, 0
    )


def _reduce_block(reduction, anchors, block, valid, scale, bias, acc):
  z = scale * _dot(anchors, block) + bias
  if reduction == "softplus":
    return acc + jnp.sum(jnp.where(valid[None, :], jax.nn.softplus(z), 0.0), axis=1)
  z = jnp.where(valid[None, :], z, -jnp.inf)
  m_old, s_old = acc
  m = jnp.maximum(m_old, jnp.max(z, axis=1))
  return m, s_old * jnp.exp(m_old - m) + jnp.sum(jnp.exp(z - m[:, None]), axis=1)


def _block_grads(reduction, anchors, block, valid, scale, bias, r, g):
  """Gradients of sum_i g_i r_i from this block: (d anchors, d block, d scale, d bias)."""
  raw = _dot(anchors, block)
  z = scale * raw + bias
  p = jnp.exp(z - r[:, None]) if reduction == "logsumexp" else jax.nn.sigmoid(z)
  gp = jnp.where(valid[None, :], g[:, None] * p, 0.0)
  d_anchors = scale * jnp.dot(gp, block.astype(gp.dtype))
  d_block = scale * jnp.dot(gp.T, anchors.astype(gp.dtype))
  return d_anchors, d_block, jnp.sum(gp * raw), jnp.sum(gp)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _streamed(x, y, scale, bias, reduction, symmetric, mode, chunk_size, axis_name):
  return _streamed_fwd(x, y, scale, bias, reduction, symmetric, mode, chunk_size, axis_name)[0]


def _streamed_fwd(x, y, scale, bias, reduction, symmetric, mode, chunk_size, axis_name):
  plan = _Plan(mode, chunk_size, x.shape[0], axis_name)
  zero = jnp.zeros_like(x[:, 0], dtype=_acc_dtype(x))
  init = zero if reduction == "softplus" else (zero - jnp.inf, zero)
  pairs = [(x, y), (y, x)] if symmetric else [(x, y)]

  def consume(accs, blocks, valid):
    return tuple(
      _reduce_block(reduction, anchors, blk, valid, scale, bias, acc)
      for (anchors, _), blk, acc in zip(pairs, blocks, accs)
    )

  def chunk_step(accs, k):
    payload = tuple(plan.take(cols, k) for _, cols in pairs)
    if mode == "chunked":
      blocks = tuple(collectives.all_gather(p, axis_name) for p in payload)
      return consume(accs, blocks, jnp.tile(plan.valid(k), plan.w)), None

    def hop(carry, _):
      accs, blocks = carry
      accs = consume(accs, blocks, plan.valid(k))
      return (accs, collectives.ring_shift(blocks, axis_name)), None

    return jax.lax.scan(hop, (accs, payload), None, length=plan.w)[0][0], None

  accs = jax.lax.scan(chunk_step, (init,) * len(pairs), jnp.arange(plan.steps))[0]
  if reduction == "logsumexp":
    accs = tuple(m + jnp.log(s) for m, s in accs)
  out = accs if symmetric else accs[0]
  return out, (x, y, scale, bias, accs)


def _streamed_bwd(reduction, symmetric, mode, chunk_size, axis_name, residuals, g):
  x, y, scale, bias, rs = residuals
  gs = g if symmetric else (g,)
  plan = _Plan(mode, chunk_size, x.shape[0], axis_name)
  # (anchors, columns, index of the anchors' gradient, index of the columns' gradient)
  pairs = [(x, y, 0, 1), (y, x, 1, 0)] if symmetric else [(x, y, 0, 1)]

  def consume(carry, blocks, valid):
    """Adds anchor gradients in place; returns column gradients of the visiting blocks."""
    (dx, dy), dscale, dbias = carry
    d_local = [dx, dy]
    d_blocks = []
    for (anchors, _, ia, _), blk, r, gi in zip(pairs, blocks, rs, gs):
      da, dblk, ds, db = _block_grads(reduction, anchors, blk, valid, scale, bias, r, gi)
      d_local[ia] = d_local[ia] + da
      d_blocks.append(dblk)
      dscale, dbias = dscale + ds, dbias + db
    return (tuple(d_local), dscale, dbias), d_blocks

  def chunk_step(carry, k):
    payload = tuple(plan.take(cols, k) for _, cols, _, _ in pairs)
    if mode == "chunked":
      blocks = tuple(collectives.all_gather(p, axis_name) for p in payload)
      carry, d_blocks = consume(carry, blocks, jnp.tile(plan.valid(k), plan.w))
      d_home = [collectives.psum_scatter(d, axis_name) for d in d_blocks]
    else:

      def hop(c, _):
        carry, blocks, d_travel = c
        carry, d_blocks = consume(carry, blocks, plan.valid(k))
        # Column gradients travel with their chunk; after W hops both are home.
        blocks, d_travel = collectives.ring_shift((blocks, tuple(t + d for t, d in zip(d_travel, d_blocks))), axis_name)
        return (carry, blocks, d_travel), None

      d_zero = tuple(jnp.zeros_like(p, dtype=_acc_dtype(p)) for p in payload)
      carry, _, d_home = jax.lax.scan(hop, (carry, payload, d_zero), None, length=plan.w)[0]
    (dx, dy), dscale, dbias = carry
    d_local = [dx, dy]
    for (_, _, _, ic), d in zip(pairs, d_home):
      d_local[ic] = plan.add(d_local[ic], d, k)
    return (tuple(d_local), dscale, dbias), None

  zeros = (jnp.zeros_like(x, dtype=_acc_dtype(x)), jnp.zeros_like(y, dtype=_acc_dtype(y)))
  scalar = jnp.zeros_like(scale)
  ((dx, dy), dscale, dbias), _ = jax.lax.scan(chunk_step, (zeros, scalar, scalar), jnp.arange(plan.steps))
  return dx.astype(x.dtype), dy.astype(y.dtype), dscale, dbias


_streamed.defvjp(_streamed_fwd, _streamed_bwd)

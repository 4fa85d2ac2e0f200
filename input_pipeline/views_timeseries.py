"""Contrastive views of time series as pure JAX on device: jitter, scaling, segment permutation, masking, crops.

Series are float [B, T, C] (time-major, C channels). Each function draws example i's randomness from
`fold_in(rng, example_ids[i])` (default ids 0..B-1), so a view depends only on the key and the example, never on
the batch's sharding. Shapes are static, so everything jits:
- TS-TCC (Eldele et al. 2021): a weak view (scaling then jitter) and a strong view (segment permutation then jitter),
  `tstcc_views`;
- TS2Vec (Yue et al. 2022): two overlapping crops (`overlapping_crops`) with timestamp masking (`time_mask`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _per_example(fn: Callable, rng: jax.Array, x: jax.Array, example_ids: jax.Array | None, *args):
  ids = jnp.arange(x.shape[0]) if example_ids is None else example_ids
  keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, ids)
  return jax.vmap(lambda k, xi: fn(k, xi, *args))(keys, x)


def jitter(rng: jax.Array, x: jax.Array, sigma: float = 0.8, *, example_ids: jax.Array | None = None) -> jax.Array:
  """x + N(0, sigma^2) noise per value: [B, T, C] -> [B, T, C] (TS-TCC jitter; its HAR setting sigma = 0.8)."""
  return _per_example(lambda k, xi: xi + sigma * jax.random.normal(k, xi.shape, xi.dtype), rng, x, example_ids)


def scale(
  rng: jax.Array, x: jax.Array, sigma: float = 1.1, mean: float = 1.0, *, example_ids: jax.Array | None = None
) -> jax.Array:
  """x times a factor ~ N(mean, sigma^2) per example and channel: [B, T, C] -> [B, T, C].

  TS-TCC's code draws the factor from N(2, 1.1^2) (its `scaling`); mean 1 keeps the series' level on average.
  """

  def one(k, xi):
    return xi * (mean + sigma * jax.random.normal(k, (1, xi.shape[1]), xi.dtype))

  return _per_example(one, rng, x, example_ids)


def permute_segments(
  rng: jax.Array, x: jax.Array, max_segments: int = 5, *, example_ids: jax.Array | None = None
) -> jax.Array:
  """Cut each series into k ~ U{1..max_segments} pieces at random points and shuffle the pieces (TS-TCC).

  [B, T, C] -> [B, T, C]; the values are a permutation of each series' timestamps, contiguous within a piece.
  """
  t = x.shape[1]

  def one(k, xi):
    k_num, k_cut, k_order = jax.random.split(k, 3)
    num = jax.random.randint(k_num, (), 1, max_segments + 1)
    cuts = jax.random.choice(k_cut, jnp.arange(1, t), (max_segments - 1,), replace=False)
    cuts = jnp.where(jnp.arange(max_segments - 1) < num - 1, cuts, t)  # only the first k - 1 cuts are used
    segment = jnp.sum(jnp.arange(t)[:, None] >= cuts[None, :], axis=1)  # [T] piece of each timestamp
    rank = jax.random.permutation(k_order, max_segments)[segment]
    return xi[jnp.lexsort((jnp.arange(t), rank))]

  return _per_example(one, rng, x, example_ids)


def time_mask(rng: jax.Array, x: jax.Array, p: float = 0.5, *, example_ids: jax.Array | None = None) -> jax.Array:
  """Zero whole timestamps with probability p each: [B, T, C] -> [B, T, C] (TS2Vec's binomial mask, p = 0.5).

  TS2Vec masks the input projection's output rather than the raw input; masking the input keeps encoders unchanged.
  """

  def one(k, xi):
    return xi * (jax.random.uniform(k, (xi.shape[0], 1)) >= p).astype(xi.dtype)

  return _per_example(one, rng, x, example_ids)


def overlapping_crops(
  rng: jax.Array, x: jax.Array, length: int, min_overlap: int, *, example_ids: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Two crops of `length` timestamps per series that share at least `min_overlap` of them (TS2Vec contextual views).

  Returns (crop1, crop2 [B, length, C], start1, start2 [B] int32): timestamp t of the original series is at
  t - start1 in crop1 and t - start2 in crop2; the shared ones are [max(start1, start2), min(start1, start2) + length).
  TS2Vec draws crops of random length; a fixed length keeps shapes static.
  """
  t = x.shape[1]
  if not 0 < min_overlap <= length <= t:
    raise ValueError(f"need 0 < min_overlap <= length <= T, got min_overlap={min_overlap}, length={length}, T={t}")
  shift = length - min_overlap

  def one(k, xi):
    k1, k2 = jax.random.split(k)
    s1 = jax.random.randint(k1, (), 0, t - length + 1)
    lo, hi = jnp.maximum(0, s1 - shift), jnp.minimum(t - length, s1 + shift)
    s2 = lo + jax.random.randint(k2, (), 0, hi - lo + 1)
    crop = lambda s: jax.lax.dynamic_slice_in_dim(xi, s, length, axis=0)
    return crop(s1), crop(s2), s1.astype(jnp.int32), s2.astype(jnp.int32)

  return _per_example(one, rng, x, example_ids)


def tstcc_views(
  rng: jax.Array,
  x: jax.Array,
  *,
  jitter_sigma: float = 0.8,
  scale_sigma: float = 1.1,
  max_segments: int = 5,
  example_ids: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """TS-TCC's two views of [B, T, C]: weak = jitter(scale(x)), strong = jitter(permute_segments(x)).

  Its HAR settings: jitter 0.8, scale 1.1, up to 8 segments (5 on others).
  """
  k_scale, k_weak, k_perm, k_strong = jax.random.split(rng, 4)
  ids = dict(example_ids=example_ids)
  weak = jitter(k_weak, scale(k_scale, x, scale_sigma, **ids), jitter_sigma, **ids)
  strong = jitter(k_strong, permute_segments(k_perm, x, max_segments, **ids), jitter_sigma, **ids)
  return weak, strong

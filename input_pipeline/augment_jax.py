"""SimCLR augmentation as pure JAX on device: jit-able, vmapped over examples with per-example keys.

Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations", Appendix A:
random resized crop (scale, aspect ratio) + horizontal flip, colour jitter (brightness, contrast, saturation,
hue) with probability 0.8, grayscale with probability 0.2, optional Gaussian blur and
solarisation (BYOL). Example i uses `jax.random.fold_in(rng, i)`, so a view depends only on the key and the
example, never on how the batch is sharded.

Each view costs two small matmuls and one 3x3 colour map per example:
- crop + resize + flip (+ blur) are separable linear maps: out = Ry @ image @ Rx^T with Ry [h, H], Rx [w, W]
  (bilinear weights, widened into a triangle filter when shrinking, so downscaled crops are antialiased);
- brightness, contrast, saturation, hue (a rotation in YIQ space) and grayscale are affine maps of RGB, so
  they compose into one 3x3 matrix plus a bias; the result is clipped to [0, 1] once.
Differences from torchvision: no clipping between the colour ops (so their order does not matter), hue is the
YIQ rotation rather than an HSV shift, and blur (folded into Ry, Rx) comes before the colour ops, not after.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import view_options
from input_pipeline.view_options import ViewOptions

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_HUE_FIXED, _HUE_COS, _HUE_SIN = (
  _YIQ_TO_RGB @ r @ _RGB_TO_YIQ
  for r in (
    np.diag([1.0, 0.0, 0.0]),
    np.diag([0.0, 1.0, 1.0]),
    np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64),
  )
)


def _as_float(images: jax.Array) -> jax.Array:
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def _resample_matrix(start, length, in_size: int, out_size: int) -> jax.Array:
  """[out_size, in_size] weights that sample [start, start + length) of an axis at out_size points.

  Bilinear when enlarging; a triangle filter as wide as the step when shrinking (antialiasing). Rows are
  normalised, so samples past the border take the edge pixel.
  """
  step = length / out_size
  centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * step - 0.5
  support = jnp.maximum(step, 1.0)
  w = jnp.maximum(0.0, 1.0 - jnp.abs(jnp.arange(in_size, dtype=jnp.float32)[None, :] - centres[:, None]) / support)
  return w / jnp.maximum(w.sum(1, keepdims=True), 1e-8)


def _gaussian_matrix(sigma, size: int) -> jax.Array:
  """[size, size] Gaussian blur with a kernel of ~10% of the side (odd, >= 3), renormalised at the borders."""
  radius = max(1, int(0.1 * size) // 2)
  d = jnp.arange(size, dtype=jnp.float32)[None, :] - jnp.arange(size, dtype=jnp.float32)[:, None]
  w = jnp.where(jnp.abs(d) <= radius, jnp.exp(-0.5 * (d / sigma) ** 2), 0.0)
  return w / w.sum(1, keepdims=True)


_CROP_ATTEMPTS = 10
# One uniform draw per example feeds every random choice (one threefry call keeps compile time low):
# crop 2 * attempts + 2, flip 1, blur 2, colour 6, solarize 1.
_NUM_UNIFORMS = 2 * _CROP_ATTEMPTS + 2 + 1 + 2 + 6 + 1


def _sample_crop(u, height: int, width: int, scale, ratio):
  """Inception-style crop box (y0, x0, h, w) from uniforms u [2 * attempts + 2].

  Area fraction ~ U(scale), log aspect ratio ~ U(log ratio); the first of the attempts that fits is used,
  the whole image if none does.
  """
  n = _CROP_ATTEMPTS
  area = (scale[0] + (scale[1] - scale[0]) * u[:n]) * height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[n : 2 * n])
  w, h = jnp.sqrt(area * aspect), jnp.sqrt(area / aspect)
  fits = (w <= width) & (h <= height)
  first = jnp.argmax(fits)
  w = jnp.where(fits.any(), w[first], width)
  h = jnp.where(fits.any(), h[first], height)
  return u[2 * n] * (height - h), u[2 * n + 1] * (width - w), h, w


def _colour_map(u, mean_rgb, strength: float, jitter_prob: float, grayscale_prob: float, hue_range: float | None):
  """(M [3, 3], b [3]) of colour jitter then grayscale, from uniforms u [6]: rgb -> M rgb + b.

  Without clipping between them, brightness, contrast, saturation and the YIQ hue rotation commute (each
  keeps gray gray and the mean luma's role unchanged), so torchvision's random order needs no sampling.
  """
  s = 0.8 * strength
  lo = max(0.0, 1.0 - s)
  brightness, contrast, saturation = (lo + (1.0 + s - lo) * u[k] for k in (1, 2, 3))
  hue_range = 0.2 * strength if hue_range is None else hue_range
  hue = (u[4] - 0.5) * 2 * hue_range * 2 * jnp.pi  # U[-hue_range, hue_range] of a turn
  to_gray = np.outer(np.ones(3), _LUMA)
  # Hue: rotate the chroma plane (I, Q) of YIQ by the hue angle.
  hue_matrix = _HUE_FIXED + jnp.cos(hue) * _HUE_COS + jnp.sin(hue) * _HUE_SIN
  saturation_matrix = saturation * np.eye(3) + (1.0 - saturation) * to_gray
  m = (brightness * contrast) * (hue_matrix @ saturation_matrix)
  # Contrast blends towards the mean gray level of the brightened image.
  b = jnp.full((3,), (1.0 - contrast) * brightness * (_LUMA @ mean_rgb))
  jitter = u[0] < jitter_prob
  m, b = jnp.where(jitter, m, np.eye(3)), jnp.where(jitter, b, 0.0)
  gray = u[5] < grayscale_prob
  return (jnp.where(gray, to_gray @ m, m).astype(jnp.float32), jnp.where(gray, to_gray @ b, b).astype(jnp.float32))


def _augment_one(key, image, *, out_size: tuple[int, int], options: ViewOptions, hue_range: float | None):
  height, width = image.shape[:2]
  out_h, out_w = out_size
  o = options
  u = jax.random.uniform(key, (_NUM_UNIFORMS,))
  u_crop, u_flip, u_blur, u_colour, u_sol = jnp.split(u, np.cumsum([2 * _CROP_ATTEMPTS + 2, 1, 2, 6]))
  y0, x0, h, w = _sample_crop(u_crop, height, width, o.crop_scale, o.crop_ratio)
  rows = _resample_matrix(y0, h, height, out_h)
  cols = _resample_matrix(x0, w, width, out_w)
  cols = jnp.where(u_flip[0] < o.flip_prob, cols[::-1], cols)
  if o.blur_prob > 0:
    sigma = o.blur_sigma[0] + (o.blur_sigma[1] - o.blur_sigma[0]) * u_blur[1]
    blur = u_blur[0] < o.blur_prob
    rows = jnp.where(blur, _gaussian_matrix(sigma, out_h) @ rows, rows)
    cols = jnp.where(blur, _gaussian_matrix(sigma, out_w) @ cols, cols)
  view = jnp.einsum("oh,hwc,pw->opc", rows, image, cols)
  m, b = _colour_map(u_colour, view.mean((0, 1)), o.jitter_strength, o.jitter_prob, o.grayscale_prob, hue_range)
  view = jnp.clip(view @ m.T + b, 0.0, 1.0)
  if o.solarize_prob > 0:
    view = jnp.where(u_sol[0] < o.solarize_prob, jnp.where(view < 0.5, view, 1.0 - view), view)
  return view


def simclr_augment(
  rng: jax.Array,
  images: jax.Array,
  *,
  hue_range: float | None = None,
  example_ids: jax.Array | None = None,
  **options,
) -> jax.Array:
  """One SimCLR view of each image: uint8 or float [B, H, W, 3] -> float32 [B, h, w, 3] in [0, 1].

  `options`: the fields of `view_options.ViewOptions` (crop, flip, colour jitter, grayscale, blur, solarisation).
  Brightness / contrast / saturation factors ~ U[1 - 0.8 s, 1 + 0.8 s], hue ~ U[-0.2 s, 0.2 s] of a turn
  (s = jitter_strength; `hue_range` overrides the 0.2 s, e.g. 0.5 for a full turn on flat-coloured data where hue
  alone would identify an image). Example i's key is fold_in(rng, example_ids[i]) (default ids 0..B-1): pass global
  example ids when calling on a local shard (e.g. inside shard_map). `out_size` defaults to (H, W).
  """
  opts = view_options.of(options)
  images = _as_float(images)
  out_size = _pair(opts.out_size) if opts.out_size is not None else images.shape[1:3]
  ids = jnp.arange(images.shape[0]) if example_ids is None else example_ids
  one = functools.partial(_augment_one, out_size=out_size, options=opts, hue_range=hue_range)

  def augment(key, ids, images):
    return jax.vmap(one)(jax.vmap(jax.random.fold_in, (None, 0))(key, ids), images)

  sharding = jax.typeof(images).sharding
  batch_axis = tuple(sharding.spec)[0] if len(sharding.spec) else None
  if batch_axis is None:
    return augment(rng, ids, images)
  # Batch sharded on an explicit-sharding mesh: augment each shard where it lives, with its global ids.
  spec = jax.P(batch_axis)
  ids = jax.sharding.reshard(ids, jax.sharding.NamedSharding(sharding.mesh, spec))
  return jax.shard_map(augment, mesh=sharding.mesh, in_specs=(jax.P(), spec, spec), out_specs=spec, check_vma=True)(
    rng, ids, images
  )


def multi_view(rng: jax.Array, images: jax.Array, num_views: int, **kwargs) -> jax.Array:
  """`num_views` independent SimCLR views: [B, H, W, 3] -> float32 [V, B, h, w, 3]; view v uses fold_in(rng, v)."""
  # A Python loop, not a vmap over views: it compiled faster here, and each view keeps the batch's sharding.
  return jnp.stack([simclr_augment(jax.random.fold_in(rng, v), images, **kwargs) for v in range(num_views)])


def multi_crop(
  rng: jax.Array,
  images: jax.Array,
  num_small: int,
  *,
  num_large: int = 2,
  large_size: int | Sequence[int] | None = None,
  small_size: int | Sequence[int] | None = None,
  large_scale: Sequence[float] = (0.14, 1.0),
  small_scale: Sequence[float] = (0.05, 0.14),
  **kwargs,
) -> list[jax.Array]:
  """Multi-crop (Caron et al. 2020, SwAV; DINO): [large views [num_large, B, S, S, 3], small [num_small, B, s, s, 3]].

  Defaults follow SwAV's 224 / 96 px crops: S = H and s = round(H * 96 / 224), scales (0.14, 1) / (0.05, 0.14).
  """
  height = images.shape[1]
  large_size = large_size or height
  small_size = small_size or max(4, round(height * 96 / 224))
  k_large, k_small = jax.random.split(rng)
  large = multi_view(k_large, images, num_large, out_size=large_size, crop_scale=large_scale, **kwargs)
  small = multi_view(k_small, images, num_small, out_size=small_size, crop_scale=small_scale, **kwargs)
  return [large, small]

"""SimCLR augmentation with TF ops on host, as a tf.data map (TensorFlow imported lazily: call sites only).

Same parameters and defaults as `augment_jax.simclr_augment`, built from tf.image stateless ops so a view is a
function of (image, seed): random resized crop (`stateless_sample_distorted_bounding_box`) + bilinear resize,
horizontal flip, colour jitter in SimCLR's fixed order (brightness, contrast, saturation, hue; clipped after
each, as in `color_jitter_nonrand` of the SimCLR code), grayscale, Gaussian blur, solarisation.

    ds = views_dataset(images, seed=0, num_views=2, batch_size=256)   # tf.data: uint8 [N, H, W, 3] -> views
    views = host_views(images, ids, seed=0, num_views=2)              # one batch: uint8 [B, V, H, W, 3]
"""

from __future__ import annotations

import functools

import numpy as np

from input_pipeline import view_options


def simclr_augment_tf(image, seed, **options):
  """One view: uint8 or float [H, W, 3] image, int seed [2] -> float32 [h, w, 3] in [0, 1] (tf.data map fn).

  `options`: the fields of `view_options.ViewOptions`, as for `augment_jax.simclr_augment`.
  """
  import tensorflow as tf

  o = view_options.of(options)
  image = tf.image.convert_image_dtype(image, tf.float32)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  out_h, out_w = (o.out_size, o.out_size) if isinstance(o.out_size, int) else (o.out_size or (None, None))
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=12)
  u = tf.random.stateless_uniform([8], seeds[0])

  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.shape(image),
    tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
    seed=seeds[1],
    min_object_covered=0.0,
    aspect_ratio_range=o.crop_ratio,
    area_range=o.crop_scale,
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  image = tf.slice(image, begin, size)
  image = tf.image.resize(image, [out_h or height, out_w or width], method="bilinear", antialias=True)
  image = tf.cond(u[0] < o.flip_prob, lambda: tf.image.flip_left_right(image), lambda: image)

  def jitter(x):
    s = 0.8 * o.jitter_strength
    lo = max(0.0, 1.0 - s)
    x = tf.clip_by_value(x * tf.random.stateless_uniform([], seeds[2], lo, 1.0 + s), 0.0, 1.0)
    x = tf.clip_by_value(tf.image.stateless_random_contrast(x, lo, 1.0 + s, seeds[3]), 0.0, 1.0)
    x = tf.clip_by_value(tf.image.stateless_random_saturation(x, lo, 1.0 + s, seeds[4]), 0.0, 1.0)
    if o.jitter_strength > 0:
      x = tf.clip_by_value(tf.image.stateless_random_hue(x, 0.2 * o.jitter_strength, seeds[5]), 0.0, 1.0)
    return x

  image = tf.cond(u[1] < o.jitter_prob, lambda: jitter(image), lambda: image)
  image = tf.cond(u[2] < o.grayscale_prob, lambda: tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3]), lambda: image)
  if o.blur_prob > 0:
    sigma = o.blur_sigma[0] + (o.blur_sigma[1] - o.blur_sigma[0]) * u[4]
    image = tf.cond(u[3] < o.blur_prob, lambda: _gaussian_blur(image, sigma), lambda: image)
  if o.solarize_prob > 0:
    image = tf.cond(u[5] < o.solarize_prob, lambda: tf.where(image < 0.5, image, 1.0 - image), lambda: image)
  return image


def _gaussian_blur(image, sigma):
  """Separable Gaussian blur, kernel ~10% of the image side (odd, >= 3), edge-padded."""
  import tensorflow as tf

  radius = max(1, int(0.1 * image.shape[0]) // 2) if image.shape[0] else 1
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  kernel = tf.exp(-0.5 * (x / sigma) ** 2)
  kernel /= tf.reduce_sum(kernel)
  padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
  k_h = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
  k_w = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
  out = tf.nn.depthwise_conv2d(padded, k_h, [1, 1, 1, 1], "VALID")
  return tf.nn.depthwise_conv2d(out, k_w, [1, 1, 1, 1], "VALID")[0]


def _view_seeds(seeds, num_views: int):
  import tensorflow as tf

  return tf.random.experimental.stateless_split(seeds, num=num_views)


def _to_uint8_views(num_views: int, kwargs: dict):
  import tensorflow as tf

  def views(image, seed):
    per_view = _view_seeds(seed, num_views)
    out = tf.stack([simclr_augment_tf(image, per_view[v], **kwargs) for v in range(num_views)])
    return tf.cast(tf.round(out * 255.0), tf.uint8)

  return views


def views_dataset(
  images: np.ndarray, *, seed: int, num_views: int = 2, batch_size: int = 256, shuffle: bool = True, **kwargs
):
  """tf.data pipeline: uint8 [N, H, W, 3] -> repeated batches of uint8 views [B, V, h, w, 3] (seed per example)."""
  import tensorflow as tf

  n = len(images)
  ds = tf.data.Dataset.from_tensor_slices((images, np.stack([np.full(n, seed), np.arange(n)], -1)))
  ds = ds.repeat()
  if shuffle:
    ds = ds.shuffle(min(n, 10_000), seed=seed)
  ds = ds.map(_to_uint8_views(num_views, kwargs), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def host_views(images: np.ndarray, ids: np.ndarray, *, seed: int, num_views: int, **kwargs) -> np.ndarray:
  """Views of one batch on host: uint8 [B, H, W, 3], ids int [B, 2] (epoch, index) -> uint8 [B, V, h, w, 3].

  Example seeds are (seed * 2^20 + epoch, index), so a view depends on the example, not on the batch.
  """
  ids = np.asarray(ids, np.int64)
  seeds = np.stack([seed * (1 << 20) + ids[:, 0], ids[:, 1]], -1)
  return _batch_views_fn(num_views, tuple(sorted(kwargs.items())))(images, seeds).numpy()


@functools.cache
def _batch_views_fn(num_views: int, kwargs: tuple):
  """A traced-once tf.function mapping the per-example view function over a batch."""
  import tensorflow as tf

  views = _to_uint8_views(num_views, dict(kwargs))

  @tf.function
  def batch_views(images, seeds):
    return tf.map_fn(lambda args: views(*args), (images, seeds), fn_output_signature=tf.uint8, parallel_iterations=64)

  return batch_views

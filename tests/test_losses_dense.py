"""Dense (pixel-level) contrast: crop-box correspondence, boxed views, PixPro and PixContrast against NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import losses
from input_pipeline import augment_dense


def _normal(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _unit64(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_distance(box1, box2, size1, size2):
  """Pixel-by-pixel loop over the definition (PixPro regression_loss, boxes as (y0, x0, h, w))."""

  def centres(box, size):
    y0, x0, h, w = box
    return [
      (y0 + (r + 0.5) * h / size[0], x0 + (c + 0.5) * w / size[1]) for r in range(size[0]) for c in range(size[1])
    ]

  diag = max(np.hypot(box1[2] / size1[0], box1[3] / size1[1]), np.hypot(box2[2] / size2[0], box2[3] / size2[1]))
  return np.array(
    [[np.hypot(a[0] - b[0], a[1] - b[1]) / diag for b in centres(box2, size2)] for a in centres(box1, size1)]
  )


def test_crop_pixel_distance_matches_the_definition_and_handles_flips():
  box1, box2 = np.array([2.0, 3.0, 20.0, 16.0]), np.array([6.0, 1.0, 12.0, 24.0])
  got = jax.jit(losses.crop_pixel_distance, static_argnums=(2, 3))(box1, box2, (3, 4), (2, 5))
  np.testing.assert_allclose(got, _numpy_distance(box1, box2, (3, 4), (2, 5)), rtol=1e-5)
  # The same crop, flipped: pixel (r, c) sits where pixel (r, w - 1 - c) of the other view does. Square bins, so
  # neighbours are 1 / sqrt(2) bin diagonals away, beyond PixPro's threshold 0.7.
  box1, flipped = np.array([2.0, 3.0, 12.0, 16.0]), np.array([2.0, 3.0 + 16.0, 12.0, -16.0])
  d = np.asarray(losses.crop_pixel_distance(box1, flipped, (3, 4), (3, 4))).reshape(3, 4, 3, 4)
  for r in range(3):
    for c in range(4):
      assert d[r, c, r, 3 - c] < 1e-6 and np.sum(d[r, c] < 0.7) == 1


def test_boxed_views_boxes_locate_the_view_pixels_in_the_original():
  size, out, batch = 32, 8, 8
  ramp = (np.arange(size) + 0.5) / size
  image = np.stack([*np.meshgrid(ramp, ramp, indexing="ij"), np.zeros((size, size))], -1)  # channels: y, x, 0
  images = jnp.asarray(np.stack([image] * batch), jnp.float32)
  fn = functools.partial(
    augment_dense.boxed_views, num_views=1, out_size=out, crop_scale=(0.3, 0.6), jitter_prob=0.0, grayscale_prob=0.0
  )
  views, boxes = jax.jit(fn)(jax.random.key(3), images)
  assert bool(jnp.any(boxes[..., 3] < 0)) and bool(jnp.any(boxes[..., 3] > 0))  # both flipped and plain views
  r = (np.arange(out) + 0.5) / out
  inner = slice(1, out - 1)
  for b in range(batch):
    y0, x0, h, w = np.asarray(boxes[0, b])
    # Inside the image, resampling a linear ramp returns the ramp at the pixel centre: the box's prediction.
    want_y = np.broadcast_to(((y0 + r * h) / size)[:, None], (out, out))
    want_x = np.broadcast_to(((x0 + r * w) / size)[None, :], (out, out))
    np.testing.assert_allclose(views[0, b, inner, inner, 0], want_y[inner, inner], atol=1.5 / size)
    np.testing.assert_allclose(views[0, b, inner, inner, 1], want_x[inner, inner], atol=1.5 / size)


def test_nearest_feature_match_is_the_argmax_of_cosine():
  f1, f2 = _normal(0, 2, 5, 4), _normal(1, 2, 6, 4)
  want = np.argmax(np.einsum("npc,nqc->npq", _unit64(f1), _unit64(f2)), axis=-1)
  got = losses.nearest_feature_match(jnp.asarray(f1), jnp.asarray(f2))
  np.testing.assert_array_equal(np.argmax(got, -1), want)
  np.testing.assert_array_equal(np.sum(got, -1), 1.0)


def _maps_and_mask(seed=0, n=3, p1=6, p2=4, d=5):
  mask = np.random.default_rng(seed + 9).random((n, p1, p2)) < 0.3
  mask[0] = False  # an image whose views do not overlap
  return _normal(seed, n, p1, d), _normal(seed + 1, n, p2, d), mask


def test_pixpro_matches_numpy():
  p1, p2, mask = _maps_and_mask()
  t1, t2 = _normal(5, *p1.shape), _normal(6, *p2.shape)
  got = jax.jit(losses.pixpro)(p1, p2, t1, t2, mask)

  def one_way(p, t, m):
    cos = np.einsum("npd,nqd->npq", _unit64(p), _unit64(t))
    return -2 * np.sum(cos * m, axis=(1, 2)) / (np.sum(m, axis=(1, 2)) + 1e-6)

  want = np.mean(one_way(p1, t2, mask) + one_way(p2, t1, mask.transpose(0, 2, 1)))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def _numpy_pixel_contrast(z1, z2, mask, tau, image_negatives):
  u1, u2 = _unit64(z1), _unit64(z2)
  terms = []
  for a, b, m in ((u1, u2, mask), (u2, u1, mask.transpose(0, 2, 1))):
    pooled = _unit64(b.mean(axis=1))
    for n in range(a.shape[0]):
      for i in range(a.shape[1]):
        if not m[n, i].any():
          continue
        s = a[n, i] @ b[n].T / tau
        negatives = [a[n, i] @ pooled[c] / tau for c in range(a.shape[0]) if c != n] if image_negatives else []
        terms.append(-np.log(np.sum(np.exp(s[m[n, i]])) / (np.sum(np.exp(s)) + np.sum(np.exp(negatives)))))
  return np.mean(terms)


def test_pixel_contrast_matches_numpy_with_and_without_image_negatives():
  z1, z2, mask = _maps_and_mask()
  for image_negatives in (False, True):
    fn = jax.jit(functools.partial(losses.pixel_contrast, temperature=0.3, image_negatives=image_negatives))
    want = _numpy_pixel_contrast(z1, z2, mask, 0.3, image_negatives)
    np.testing.assert_allclose(fn(z1, z2, mask), want, rtol=1e-5)


def test_pixel_contrast_gradient_is_finite_and_zero_for_images_without_positives():
  z1, z2, mask = _maps_and_mask()
  grad = lambda image_negatives: jax.jit(
    jax.grad(functools.partial(losses.pixel_contrast, image_negatives=image_negatives), argnums=(0, 1))
  )(z1, z2, mask)
  for g in (*grad(False), *grad(True)):
    assert bool(jnp.all(jnp.isfinite(g)))
  np.testing.assert_array_equal(grad(False)[0][0], 0.0)  # image 0: no positives, and no image negatives

"""On-device SimCLR augmentation: shapes, ranges, determinism, sharding invariance."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from input_pipeline import augment_jax, shapes

IDENTITY = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0)


@pytest.fixture(scope="module")
def images():
  return shapes.render(0, "train", np.arange(16))[0]


@pytest.fixture(scope="module")
def augment():
  return jax.jit(augment_jax.simclr_augment, static_argnames=("blur_prob", "solarize_prob", "out_size"))


def test_view_is_float_in_unit_range_for_uint8_and_float_input(images, augment):
  for x in (images, images.astype(np.float32) / 255.0):
    view = augment(jax.random.key(0), x, blur_prob=0.5, solarize_prob=0.2)
    chex.assert_shape(view, images.shape)
    assert view.dtype == jnp.float32
    assert 0.0 <= float(view.min()) and float(view.max()) <= 1.0


def test_out_size_resizes(images, augment):
  chex.assert_shape(augment(jax.random.key(0), images, out_size=(20, 24)), (16, 20, 24, 3))


def test_same_key_same_view_different_keys_differ(images, augment):
  a, b = augment(jax.random.key(1), images), augment(jax.random.key(1), images)
  c = augment(jax.random.key(2), images)
  np.testing.assert_array_equal(a, b)
  assert float(jnp.abs(a - c).mean()) > 0.01


def test_identical_images_in_a_batch_get_different_views(images, augment):
  views = augment(jax.random.key(0), np.repeat(images[:1], 16, 0))
  assert float(jnp.abs(views[0] - views[1]).mean()) > 0.01


def test_identity_settings_return_the_image(images):
  view = jax.jit(functools.partial(augment_jax.simclr_augment, **IDENTITY))(jax.random.key(0), images[:2])
  np.testing.assert_allclose(view, images[:2] / 255.0, atol=1e-5)


def test_flip_and_grayscale_at_probability_one(images):
  kw = dict(IDENTITY, flip_prob=1.0, grayscale_prob=1.0)
  view = np.asarray(jax.jit(functools.partial(augment_jax.simclr_augment, **kw))(jax.random.key(0), images[:2]))
  np.testing.assert_allclose(view[..., 0], view[..., 1], atol=1e-5)
  gray = (images[:2] / 255.0) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(view[..., 0], gray[:, :, ::-1], atol=1e-4)


def test_multi_view_and_multi_crop_shapes(images):
  views = jax.jit(lambda k, x: augment_jax.multi_view(k, x, 3))(jax.random.key(0), images)
  chex.assert_shape(views, (3, 16, 32, 32, 3))
  assert float(jnp.abs(views[0] - views[1]).mean()) > 0.01
  large, small = jax.jit(lambda k, x: augment_jax.multi_crop(k, x, 4, small_size=16))(jax.random.key(0), images)
  chex.assert_shape(large, (2, 16, 32, 32, 3))
  chex.assert_shape(small, (4, 16, 16, 16, 3))


@pytest.mark.parametrize("axis_type", [jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit])
def test_sharded_input_under_jit_equals_unsharded(images, augment, axis_type):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
  sharded = jax.device_put(images, jax.sharding.NamedSharding(mesh, jax.P("data")))
  expected = augment(jax.random.key(3), images)
  got = augment(jax.random.key(3), sharded)
  assert len(got.sharding.device_set) == 8
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_misspelled_view_option_names_the_nearest_one(images):
  with pytest.raises(
    ValueError, match=r"config.augment.crop_scal is not an argument of the view options .*\(did you mean crop_scale\?\)"
  ):
    augment_jax.simclr_augment(jax.random.key(0), images, crop_scal=(0.5, 1.0))

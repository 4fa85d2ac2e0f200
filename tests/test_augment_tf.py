"""SimCLR augmentation with TF ops on host (tf.data map): shapes, ranges, determinism from the seed."""

import numpy as np
import pytest

from input_pipeline import augment_tf, shapes

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def images():
  return shapes.render(0, "train", np.arange(8))[0]


def ids(n, epoch=0):
  return np.stack([np.full(n, epoch), np.arange(n)], -1)


def test_host_views_are_uint8_views_per_example(images):
  views = augment_tf.host_views(images, ids(8), seed=0, num_views=2)
  assert views.shape == (8, 2, 32, 32, 3) and views.dtype == np.uint8
  assert np.abs(views[:, 0].astype(int) - views[:, 1]).mean() > 3


def test_views_depend_on_seed_and_example_not_on_the_batch(images):
  full = augment_tf.host_views(images, ids(8), seed=0, num_views=2)
  np.testing.assert_array_equal(augment_tf.host_views(images[4:], ids(8)[4:], seed=0, num_views=2), full[4:])
  assert not np.array_equal(augment_tf.host_views(images, ids(8, epoch=1), seed=0, num_views=2), full)


def test_views_dataset_is_a_tf_data_pipeline_of_batches(images):
  batch = next(
    iter(
      augment_tf.views_dataset(images, seed=0, num_views=3, batch_size=4, blur_prob=0.5, solarize_prob=0.5, out_size=24)
    )
  )
  assert tuple(batch.shape) == (4, 3, 24, 24, 3)

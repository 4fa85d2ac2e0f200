"""input_pipeline.build / load_split on the embedded shapes dataset: batches, sharding, order, resume, errors."""

import json

import numpy as np
import pytest

import input_pipeline
from configs import default
from input_pipeline import shapes


def small_config(**overrides):
  config = default.data()
  config.train_size, config.test_size, config.tokenizer = 96, 40, "bytes"
  config.update(overrides)
  return config


def labels_of(iterator, n):
  return [np.asarray(next(iterator)["label"]) for _ in range(n)]


def test_shapes_example_is_a_function_of_seed_split_index():
  image, label, caption = shapes.render_example(0, "train", 7)
  again = shapes.render_example(0, "train", 7)
  np.testing.assert_array_equal(image, again[0])
  assert (label, caption) == again[1:]
  assert shapes.CLASS_NAMES[label] in caption
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  assert not np.array_equal(image, shapes.render_example(0, "test", 7)[0])
  assert not np.array_equal(image, shapes.render_example(1, "train", 7)[0])


def test_shapes_prompt_templates_are_the_caption_forms_with_the_class_left_out():
  templates = shapes.prompt_templates()
  assert len(templates) == len(set(templates)) == 3 * 12 * 11
  _, labels, captions = shapes.render(0, "test", np.arange(50), image_size=8)
  for label, caption in zip(labels, captions):
    assert caption in {t.format(shapes.CLASS_NAMES[label]) for t in templates}
    assert not any(
      caption == t.format(other)
      for t in templates
      for other in shapes.CLASS_NAMES
      if other != shapes.CLASS_NAMES[label]
    )


def test_shapes_covers_every_class_with_varied_colours():
  images, labels, _ = shapes.render(0, "train", np.arange(300))
  assert set(labels.tolist()) == set(range(len(shapes.CLASS_NAMES)))
  assert len(np.unique(images[:, 0, 0] // 32, axis=0)) > 10  # backgrounds are not tied to the class


def test_batches_are_global_sharded_arrays(sharding):
  batch = next(input_pipeline.build(small_config(), split="train", global_batch_size=16, sharding=sharding, seed=0))
  assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert batch["caption"].shape == (16, 64) and batch["caption"].dtype == np.int32
  assert batch["image"].sharding == sharding and len(batch["image"].sharding.device_set) == 8


def test_one_epoch_without_shuffle_reads_every_example_once(sharding):
  config = small_config()
  it = input_pipeline.build(
    config, split="train", global_batch_size=16, sharding=sharding, seed=0, shuffle=False, repeat=False
  )
  labels = np.concatenate([np.asarray(b["label"]) for b in it])
  np.testing.assert_array_equal(labels, input_pipeline.load_split(config, "train")["label"])


def test_shuffle_is_deterministic_from_the_seed(sharding):
  build = lambda seed: input_pipeline.build(  # noqa: E731
    small_config(), split="train", global_batch_size=16, sharding=sharding, seed=seed
  )
  first, again, other = labels_of(build(0), 6), labels_of(build(0), 6), labels_of(build(1), 6)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


def test_resume_from_json_state_continues_exactly(sharding):
  build = lambda: input_pipeline.build(  # noqa: E731
    small_config(), split="train", global_batch_size=16, sharding=sharding, seed=0
  )
  straight = labels_of(build(), 10)  # crosses an epoch boundary (96 examples = 6 batches)
  first = build()
  labels_of(first, 5)
  state = json.loads(json.dumps(first.get_state()))
  resumed = build()
  resumed.set_state(state)
  np.testing.assert_array_equal(labels_of(resumed, 5), straight[5:])


def test_load_split_returns_the_whole_split_on_host():
  data = input_pipeline.load_split(small_config(), "test")
  assert data["image"].shape == (40, 32, 32, 3) and data["label"].shape == (40,)
  assert data["caption"].dtype.kind == "U" and " on " in data["caption"][0]
  assert input_pipeline.num_examples(small_config(), "test") == 40


def test_batch_size_not_divisible_by_devices_is_one_clear_error(sharding):
  with pytest.raises(ValueError, match=r"global_batch_size=12 .* 8 devices"):
    input_pipeline.build(small_config(), split="train", global_batch_size=12, sharding=sharding, seed=0)


def test_unknown_source_lists_the_known_ones(sharding):
  with pytest.raises(ValueError, match=r"Unknown data source 'nope'.*shapes"):
    input_pipeline.build(small_config(name="nope"), split="train", global_batch_size=8, sharding=sharding, seed=0)


def test_empty_dataset_and_wrong_path_fail_at_start(sharding, tmp_path):
  with pytest.raises(ValueError, match="empty"):
    input_pipeline.build(small_config(train_size=0), split="train", global_batch_size=8, sharding=sharding, seed=0)
  with pytest.raises(ValueError, match="No .npz file at"):
    input_pipeline.build(
      small_config(name="npz", path=str(tmp_path / "missing.npz")),
      split="train",
      global_batch_size=8,
      sharding=sharding,
      seed=0,
    )


def test_prefetch_threads_still_running_are_stopped_at_exit(sharding):
  # Python kills daemon threads at exit; one killed inside jax's C++ aborts the process, so an atexit hook stops them.
  from input_pipeline import iterator

  it = input_pipeline.build(small_config(), split="train", global_batch_size=16, sharding=sharding, seed=0)
  next(it)
  thread = it._thread
  assert thread.is_alive() and it in iterator._RUNNING
  iterator._stop_running_iterators()
  assert not thread.is_alive() and it not in iterator._RUNNING


def test_caption_word_dropout_shortens_training_captions_only():
  config = default.data()
  config.update(dict(tokenizer="", caption_word_dropout=0.5))
  captions = np.asarray(["a small red circle on a blue background"] * 64, object)
  ids = np.stack([np.zeros(64, int), np.arange(64)], axis=1)
  train = input_pipeline._host_transform(config, 0, "train")({"caption": captions}, ids)["caption"]
  kept = [len(c.split()) for c in train]
  assert 1 <= min(kept) and max(kept) <= 8 and 3 < np.mean(kept) < 5
  assert all(set(c.split()) <= set(captions[0].split()) for c in train)
  transform = lambda split: input_pipeline._host_transform(config, 0, split)({"caption": captions}, ids)["caption"]
  assert list(transform("train")) == list(train)  # a function of (seed, epoch, index)
  assert list(transform("test")) == list(captions)


def test_shapes_hard_negative_is_the_same_scene_with_another_shape():
  config = small_config()
  config.hard_negatives = True
  rows, _ = input_pipeline.sources.get_source(config, "train").read(np.arange(20))
  assert np.all(rows["label_b"] != rows["label"])
  for caption, label, caption_b, label_b in zip(rows["caption"], rows["label"], rows["caption_b"], rows["label_b"]):
    assert caption_b == caption.replace(shapes.CLASS_NAMES[label], shapes.CLASS_NAMES[label_b])
  # Same colours and noise: the two images differ only where the shapes do.
  differs = np.any(rows["image"] != rows["image_b"], axis=-1).mean(axis=(1, 2))
  assert np.all(differs > 0) and np.all(differs < 0.6)
  assert "image_b" not in input_pipeline.sources.get_source(config, "test").read(np.arange(2))[0]

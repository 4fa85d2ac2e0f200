"""Every registered source on small data written by the test; bad records are skipped and counted."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import input_pipeline
from configs import default
from input_pipeline import shapes
from conftest import SHARED_DATA

SIZE = 16


def config(name, path="", **overrides):
  c = default.data()
  c.update(dict(dict(name=name, path=str(path), image_size=SIZE, tokenizer="bytes"), **overrides))
  return c


def encode(image, fmt="PNG"):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=fmt)
  return buf.getvalue()


@pytest.fixture(scope="module")
def images():
  return shapes.render(0, "train", np.arange(24), image_size=SIZE)


def first_batch(c, sharding, batch_size=8):
  it = input_pipeline.build(c, split="train", global_batch_size=batch_size, sharding=sharding, seed=0)
  return next(it), it


def test_npz_arrays(tmp_path, images, sharding):
  np.savez(tmp_path / "d.npz", train_images=images[0], train_labels=images[1], train_captions=images[2].astype(str))
  batch, _ = first_batch(config("npz", tmp_path / "d.npz"), sharding)
  assert batch["image"].shape == (8, SIZE, SIZE, 3) and batch["caption"].dtype == np.int32
  np.testing.assert_array_equal(
    input_pipeline.load_split(config("npz", tmp_path / "d.npz"), "train")["label"], images[1]
  )


def test_flat_jpeg_npz_like_shared_cifar10(tmp_path, images, sharding):
  blobs = [np.frombuffer(encode(x, "JPEG"), np.uint8) for x in images[0]]
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
  np.savez(
    tmp_path / "c.npz",
    train_jpeg=np.concatenate(blobs),
    train_offsets=offsets,
    train_labels=images[1],
    class_names=np.array(shapes.CLASS_NAMES),
  )
  c = config("cifar10_npz", tmp_path / "c.npz")
  data = input_pipeline.load_split(c, "train")
  assert data["image"].shape == (24, SIZE, SIZE, 3)
  assert np.abs(data["image"].astype(int) - images[0]).mean() < 12  # JPEG is lossy
  assert first_batch(c, sharding)[0]["label"].shape == (8,)


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED_DATA, "cifar10.npz")), reason="no shared CIFAR-10")
def test_real_cifar10_by_config_argument(sharding):
  c = config("cifar10_npz", image_size=32)
  assert input_pipeline.num_examples(c, "test") == 10_000
  batch, _ = first_batch(c, sharding, 16)
  assert batch["image"].shape == (16, 32, 32, 3) and int(batch["label"].max()) < 10


def write_image_folder(root, images):
  for i, (x, y) in enumerate(zip(images[0][:12], images[1][:12])):
    os.makedirs(root / shapes.CLASS_NAMES[y], exist_ok=True)
    Image.fromarray(x).save(root / shapes.CLASS_NAMES[y] / f"{i}.{'png' if i % 2 else 'jpg'}")
  Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(root / shapes.CLASS_NAMES[images[1][0]] / "wide.png")
  (root / shapes.CLASS_NAMES[images[1][0]] / "corrupt.jpg").write_bytes(b"not an image")


def test_image_folder_skips_and_counts_a_corrupt_file(tmp_path, images, sharding):
  write_image_folder(tmp_path, images)
  c = config("image_folder", tmp_path)
  it = input_pipeline.build(c, split="train", global_batch_size=8, sharding=sharding, seed=0, shuffle=False)
  batches = [next(it) for _ in range(4)]  # 14 files, 2 epochs: the corrupt one is met at least once
  assert all(b["image"].shape == (8, SIZE, SIZE, 3) for b in batches)
  assert it.skipped >= 1 and it.get_state()["skipped"] == it.skipped
  data = input_pipeline.load_split(c, "train")
  assert len(data["label"]) == 13 and data["image"].shape[1:] == (SIZE, SIZE, 3)


def test_image_folder_wrong_path_is_one_clear_error(tmp_path, sharding):
  with pytest.raises(ValueError, match="No image folder at"):
    first_batch(config("image_folder", tmp_path / "nowhere"), sharding)
  with pytest.raises(ValueError, match="No images under"):
    first_batch(config("image_folder", tmp_path), sharding)


def test_jsonl_image_text_skips_malformed_rows_and_missing_files(tmp_path, images, sharding):
  rows = []
  for i in range(10):
    Image.fromarray(images[0][i]).save(tmp_path / f"{i}.png")
    rows.append(json.dumps({"image": f"{i}.png", "text": str(images[2][i])}))
  rows += ["{not json", json.dumps({"text": "no image"}), json.dumps({"image": "missing.png", "text": "gone"})]
  (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
  c = config("jsonl", tmp_path / "{split}.jsonl")
  batch, it = first_batch(c, sharding)
  assert batch["caption"].shape == (8, 64) and batch["image"].shape == (8, SIZE, SIZE, 3)
  [next(it) for _ in range(2)]
  assert it.skipped >= 3  # two malformed rows at load + the missing file while reading
  data = input_pipeline.load_split(c, "train")
  assert list(data["caption"]) == [str(t) for t in images[2][:10]]


def test_tfrecord_encoded_images(tmp_path, images, sharding):
  import tensorflow as tf

  def feature(**kw):
    return tf.train.Example(features=tf.train.Features(feature=kw)).SerializeToString()

  with tf.io.TFRecordWriter(str(tmp_path / "train-00000.tfrecord")) as w:
    for x, y in zip(images[0][:12], images[1][:12]):
      w.write(
        feature(
          image=tf.train.Feature(bytes_list=tf.train.BytesList(value=[encode(x)])),
          label=tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y)])),
        )
      )
    w.write(feature(image=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"corrupt"]))))
    w.write(b"not a tf.train.Example")
  c = config("tfrecord", tmp_path / "train-*.tfrecord")
  data = input_pipeline.load_split(c, "train")
  np.testing.assert_array_equal(data["image"], images[0][:12])
  np.testing.assert_array_equal(data["label"], images[1][:12])
  assert first_batch(c, sharding)[0]["label"].shape == (8,)


@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])  # files streamed / tfds.data_source
def test_tfds_local_shapes_builder_matches_the_numpy_source(tmp_path, sharding, file_format):
  import tensorflow_datasets as tfds

  from input_pipeline import shapes_tfds  # noqa: F401  (registers the builder)

  tfds.builder("shapes/tiny", data_dir=str(tmp_path), file_format=file_format).download_and_prepare()
  c = config("tfds:shapes/tiny", data_dir=str(tmp_path), image_size=32)
  streamed = isinstance(input_pipeline.sources.get_source(c, "test"), input_pipeline.sources.StreamSource)
  assert streamed == (file_format == "tfrecord")
  assert input_pipeline.class_names(c, "test") == list(shapes.CLASS_NAMES)
  data = input_pipeline.load_split(c, "test")
  expected = shapes.render(0, "test", np.arange(256))
  np.testing.assert_array_equal(data["image"], expected[0])
  np.testing.assert_array_equal(data["label"], expected[1])
  assert list(data["caption"]) == list(expected[2])
  assert first_batch(c, sharding)[0]["image"].shape == (8, 32, 32, 3)


def test_tfds_dataset_by_name_with_mock_data(tmp_path, sharding):
  import tensorflow_datasets as tfds

  c = config("tfds:cifar10", data_dir=str(tmp_path), download=True, image_size=32)
  with tfds.testing.mock_data(num_examples=12):  # Patches download_and_prepare: no network.
    batch, _ = first_batch(c, sharding)
    assert batch["image"].shape == (8, 32, 32, 3) and int(batch["label"].max()) < 10
    assert input_pipeline.num_examples(c, "test") == 12


def test_tfds_dataset_not_prepared_says_how_to_prepare_it(tmp_path, sharding):
  with pytest.raises(ValueError, match="tfds build cifar10"):
    first_batch(config("tfds:cifar10", data_dir=str(tmp_path)), sharding)


def test_sentences_tsv_triplets_are_tokenized(tmp_path, sharding):
  rows = [f"anchor {i}\tpositive {i}\tnegative {i}" for i in range(16)] + ["only one field"]
  (tmp_path / "nli.tsv").write_text("\n".join(rows) + "\n")
  batch, it = first_batch(config("sentences", tmp_path / "nli.tsv"), sharding)
  assert {"text", "text_pos", "text_neg"} <= set(batch) and batch["text_neg"].dtype == np.int32
  assert it.skipped == 1
  import tokenization as tokenizers

  assert tokenizers.ByteTokenizer().decode(np.asarray(batch["text"]))[0].startswith("anchor ")


def test_sentences_text_file_with_esimcse_views(tmp_path, sharding):
  (tmp_path / "train.txt").write_text("\n".join(f"sentence number {i} is here" for i in range(16)) + "\n")
  batch, _ = first_batch(config("sentences", tmp_path / "{split}.txt", text_views="word_repetition"), sharding)
  assert batch["text"].shape == batch["text_pos"].shape == (8, 64)


def test_sts_scored_pairs(tmp_path):
  (tmp_path / "sts.tsv").write_text("4.5\ta man plays\ta man is playing\n0.0\ta cat\tthe stock market\n")
  data = input_pipeline.load_split(
    config("sentences", tmp_path / "sts.tsv", columns=("score", "text", "text_pos")), "train"
  )
  np.testing.assert_allclose(data["score"], [4.5, 0.0])
  assert list(data["text_pos"]) == ["a man is playing", "the stock market"]


def test_precomputed_embeddings(tmp_path, sharding):
  np.save(tmp_path / "train.npy", np.random.default_rng(0).normal(size=(16, 2, 4)).astype(np.float16))
  batch, _ = first_batch(config("embeddings", tmp_path / "{split}.npy"), sharding)
  assert batch["embedding"].shape == (8, 2, 4) and batch["embedding"].dtype == np.float32


def test_host_views_with_tf_ops(sharding):
  c = default.data()
  c.update(dict(train_size=32, host_views=2, tokenizer=""))
  batch, _ = first_batch(c, sharding)
  assert batch["views"].shape == (8, 2, 32, 32, 3) and batch["views"].dtype == np.uint8
  assert "caption" not in batch

"""Hostile records in every file source: each is decoded correctly or skipped and counted exactly; no crash, no hang."""

import io
import json
import os
import struct
import zlib

import jax
import msgpack
import numpy as np
import pytest
from PIL import Image

import input_pipeline
from configs import default
from records import examples, images, webdataset

S = 8  # images are S x S: decoded without resizing, so pixels can be checked exactly
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
  buf = io.BytesIO()
  image.save(buf, format=fmt)
  return buf.getvalue()


def declared_png(width: int, height: int) -> bytes:
  """A small PNG declaring width x height pixels: a decompression bomb (its data would inflate to w * h * 3 bytes)."""

  def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b"")


def hostile_images() -> list[tuple[str, bytes, np.ndarray | None]]:
  """(name, bytes, expected uint8 [S, S, 3] or None when the row must be skipped)."""
  rgb = np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8)
  jpeg = encode(Image.fromarray(np.kron(rgb, np.ones((8, 8, 1), np.uint8))), "JPEG")  # 64 px: a real JPEG body
  gray16 = (np.arange(S * S, dtype=np.uint16).reshape(S, S) * 1000).astype(np.uint16)
  palette = Image.fromarray(rgb[..., 0] // 64).convert("P")
  palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
  rgba = np.concatenate([rgb, np.full((S, S, 1), 255, np.uint8)], -1)
  rgba[: S // 2, :, 3] = 0  # the top half transparent: composited over white
  over_white = rgb.copy()
  over_white[: S // 2] = 255
  cmyk = Image.fromarray(np.full((S, S, 3), (200, 40, 90), np.uint8)).convert("CMYK")
  return [
    ("good_png", encode(Image.fromarray(rgb)), rgb),
    ("random_bytes", np.random.default_rng(1).bytes(300), None),
    ("truncated_jpeg", jpeg[: len(jpeg) // 2], None),
    ("zero_bytes", b"", None),
    ("cmyk_jpeg", encode(cmyk, "JPEG"), np.asarray(cmyk.convert("RGB"))),
    (
      "gray16_png",
      encode(Image.fromarray(gray16)),
      np.repeat(np.round(gray16 / 257).astype(np.uint8)[..., None], 3, -1),
    ),
    ("palette_png", encode(palette), np.asarray(palette.convert("RGB"))),
    ("gray_png", encode(Image.fromarray(rgb[..., 1])), np.repeat(rgb[..., 1:2], 3, -1)),
    ("alpha_png", encode(Image.fromarray(rgba, "RGBA")), over_white),
    ("bomb_10g_pixels", declared_png(100_000, 100_000), None),  # Pillow refuses it itself (> 2x its limit)
    ("bomb_81m_pixels", declared_png(9_000, 9_000), None),  # above our limit, below twice Pillow's
  ]


GOOD_IMAGE = hostile_images()[0][1]
CAPTIONS = [  # (caption bytes, expected str or None when the row must be skipped)
  (b"a red circle", "a red circle"),
  (b"caf\xe9 \xff ok", "caf\ufffd \ufffd ok"),  # invalid UTF-8: replaced, kept
  (b"", None),
  (b"   ", None),
  (b"x" * 1_000_000, "x" * examples.MAX_TEXT_CHARS),  # 1 MB: cut
]
IMAGE_SKIPS = sum(e is None for _, _, e in hostile_images())
CAPTION_SKIPS = sum(e is None for _, e in CAPTIONS)


def read_all(c) -> tuple[dict, int]:
  it = input_pipeline.eval_batches(c, "train", batch_size=3)
  parts = list(it)
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, it.skipped


def config(name, path, **overrides):
  c = default.data()
  c.tokenizer = "bytes"
  c.update(dict(name=name, path=str(path), image_size=S, **overrides))
  return c


def check_images(rows: dict, skipped: int, extra_skips: int = 0) -> None:
  expected = [e for _, _, e in hostile_images() if e is not None]
  assert skipped == IMAGE_SKIPS + extra_skips
  assert len(rows["image"]) == len(expected)
  for got, want, name in zip(rows["image"], expected, [n for n, _, e in hostile_images() if e is not None]):
    tolerance = 12 if "jpeg" in name else 0  # JPEG is lossy; every other mode decodes exactly
    assert np.abs(got.astype(int) - want).max() <= tolerance, name


def check_captions(rows: dict, skipped: int, extra_skips: int = 0) -> None:
  assert skipped == CAPTION_SKIPS + extra_skips
  assert list(rows["caption"]) == [e for _, e in CAPTIONS if e is not None]


def test_array_record_hostile_records(tmp_path):
  from array_record.python import array_record_module

  writer = array_record_module.ArrayRecordWriter(str(tmp_path / "train-0.array_record"), "group_size:1")
  for _, data, _ in hostile_images():
    writer.write(examples.encode({"image": data, "label": 1}))
  writer.write(b"\xc1 not msgpack")  # +1 skip
  writer.write(examples.encode({"label": 2}))  # +1 skip: no image
  writer.close()
  c = config("array_record", tmp_path / "train-*.array_record")
  rows, skipped = read_all(c)
  check_images(rows, skipped, extra_skips=2)
  assert set(rows["label"]) == {1}

  writer = array_record_module.ArrayRecordWriter(str(tmp_path / "c-0.array_record"), "group_size:1")
  for caption, _ in CAPTIONS:
    # A map whose "caption" is a msgpack str holding the raw bytes, as a foreign writer may leave invalid UTF-8.
    raw_str = msgpack.packb(caption, use_bin_type=False)
    writer.write(b"\x82" + msgpack.packb("image") + msgpack.packb(GOOD_IMAGE) + msgpack.packb("caption") + raw_str)
  writer.close()
  check_captions(*read_all(config("array_record", tmp_path / "c-*.array_record")))


def test_tar_hostile_samples_and_a_truncated_member(tmp_path):
  samples = [
    (f"{i:04d}", {"jpg" if "jpeg" in n else "png": d, "cls": b"1"}) for i, (n, d, _) in enumerate(hostile_images())
  ]
  samples.append(("9990", {"cls": b"3"}))  # +1 skip: no image
  webdataset.write_shard(str(tmp_path / "train-0.tar"), samples)
  for shard, cut in ((1, 100), (2, 612)):  # 512-byte blocks: sample a, then b's header cut (+1), b's image cut (+1)
    webdataset.write_shard(str(tmp_path / f"train-{shard}.tar"), [(k, {"png": GOOD_IMAGE, "cls": b"1"}) for k in "ab"])
    whole = (tmp_path / f"train-{shard}.tar").read_bytes()
    (tmp_path / f"train-{shard}.tar").write_bytes(whole[: 4 * 512 + cut])
  rows, skipped = read_all(config("tar", tmp_path / "train-{0..2}.tar"))
  expected_good = len(hostile_images()) - IMAGE_SKIPS + 2
  assert len(rows["image"]) == expected_good and skipped == IMAGE_SKIPS + 3

  samples = [(f"{i:04d}", {"png": GOOD_IMAGE, "txt": c}) for i, (c, _) in enumerate(CAPTIONS)]
  samples.append(("9999", {"png": GOOD_IMAGE}))  # +1 skip: no caption
  webdataset.write_shard(str(tmp_path / "c-0.tar"), samples)
  check_captions(*read_all(config("tar", tmp_path / "c-0.tar")), extra_skips=1)


def test_jsonl_hostile_lines(tmp_path):
  lines = []
  for i, (_, data, _) in enumerate(hostile_images()):
    (tmp_path / f"{i}.img").write_bytes(data)
    lines.append(json.dumps({"image": f"{i}.img", "text": "a caption"}).encode())
  for i, (caption, _) in enumerate(CAPTIONS):
    (tmp_path / f"c{i}.png").write_bytes(GOOD_IMAGE)
    lines.append(b'{"image": "c%d.png", "text": "' % i + caption + b'"}')
  # +4 skips: a JSON array, a string, a broken line, a missing image file
  lines += [b"[1, 2]", b'"just a string"', b'{"image": ', b'{"image": "missing.png", "text": "gone"}']
  (tmp_path / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n\n")
  rows, skipped = read_all(config("jsonl", tmp_path / "{split}.jsonl"))
  assert skipped == IMAGE_SKIPS + CAPTION_SKIPS + 4
  captions = [e for _, e in CAPTIONS if e is not None]
  assert list(rows["caption"]) == ["a caption"] * (len(hostile_images()) - IMAGE_SKIPS) + captions


def test_image_folder_and_flat_jpeg_npz_hostile_files(tmp_path):
  os.makedirs(tmp_path / "folder" / "cls")
  for i, (_, data, _) in enumerate(hostile_images()):
    (tmp_path / "folder" / "cls" / f"{i:02d}.png").write_bytes(data)
  check_images(*read_all(config("image_folder", tmp_path / "folder")))

  blobs = [np.frombuffer(d, np.uint8) for _, d, _ in hostile_images()]
  np.savez(
    tmp_path / "flat.npz",
    train_jpeg=np.concatenate(blobs),
    train_offsets=np.cumsum([0] + [len(b) for b in blobs]),
    train_labels=np.zeros(len(blobs), np.int32),
  )
  check_images(*read_all(config("cifar10_npz", tmp_path / "flat.npz")))


def test_tfrecord_hostile_records_and_a_truncated_file(tmp_path):
  import tensorflow as tf

  path = tmp_path / "train.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as w:
    for _, data, _ in hostile_images():
      feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}
      w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    w.write(b"not an Example proto \xff")  # +1
    w.write(b"x" * 100)  # cut below: +1
  path.write_bytes(path.read_bytes()[:-50])
  check_images(*read_all(config("tfrecord", path)), extra_skips=2)


def test_tsv_rows_with_a_missing_column_are_counted_at_load(tmp_path):
  (tmp_path / "pairs.tsv").write_bytes(b"a\tb\nonly one\nc\t\xff\xfe d\n\nx\ty\tz\n")
  c = config("sentences", tmp_path / "pairs.tsv", columns=("text", "text_pos"))
  rows, skipped = read_all(c)
  assert skipped == 2 and list(rows["text_pos"]) == ["b", "\ufffd\ufffd d"]


def test_skips_reach_the_iterator_state_and_an_all_corrupt_dataset_stops(tmp_path):
  sharding = jax.sharding.NamedSharding(jax.make_mesh((8,), ("data",)), jax.P("data"))
  for i, (_, data, _) in enumerate(hostile_images()):
    webdataset.write_shard(str(tmp_path / f"train-{i}.tar"), [("k", {"png": data, "cls": b"0"})])
  c = config("tar", tmp_path / "train-*.tar", shuffle_buffer=4)
  it = input_pipeline.build(c, split="train", global_batch_size=8, sharding=sharding, seed=0)
  for _ in range(3):  # 24 rows of 6 good ones per epoch: 4+ epochs
    next(it)
  epochs = it.get_state()["epoch"]
  assert epochs >= 3 and it.get_state()["skipped"] >= epochs * IMAGE_SKIPS
  it.close()

  for i in range(2):
    webdataset.write_shard(str(tmp_path / f"bad-{i}.tar"), [("k", {"png": b"junk"})])
  bad = input_pipeline.build(
    config("tar", tmp_path / "bad-*.tar"), split="train", global_batch_size=8, sharding=sharding, seed=0
  )
  with pytest.raises(RuntimeError, match="No readable example in a whole epoch"):
    next(bad)


@pytest.mark.parametrize("pixels", [(100_000, 100_000), (9_000, 9_000)])
def test_decompression_bombs_are_refused_before_decoding(pixels):
  with pytest.raises(Image.DecompressionBombError):
    images.decode_image(declared_png(*pixels), S)

"""ArrayRecord and tar shards written by the converter in the test: rows, columns, per-process shares, exact resume,
worker processes, start-up errors, memory that does not grow with the data, no TensorFlow."""

import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import input_pipeline
from configs import default
from input_pipeline import convert, reader, shapes, sources
from records import shards
from records import images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, TRAIN, TEST = 16, 90, 24
FORMATS = ("array_record", "tar")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """The shapes splits as arrays, an npz of them, and their ArrayRecord and tar conversions (shards of 20 rows)."""
  root = tmp_path_factory.mktemp("shards")
  arrays = {s: shapes.render(0, s, np.arange(n), image_size=SIZE) for s, n in (("train", TRAIN), ("test", TEST))}
  npz = root / "shapes.npz"
  np.savez(
    npz,
    class_names=np.array(shapes.CLASS_NAMES),
    **{
      f"{s}_{k}": v
      for s, (x, y, c) in arrays.items()
      for k, v in (("images", x), ("labels", y), ("captions", c.astype(str)))
    },
  )
  for fmt in FORMATS:
    for split in ("train", "test"):
      convert.convert(str(npz), str(root / fmt), fmt, 20, split)
  return root, arrays


def config(root, fmt, **overrides):
  c = default.data()
  c.tokenizer = "bytes"
  ext = "array_record" if fmt == "array_record" else "tar"
  c.update(dict(name=fmt, path=str(root / fmt / ("{split}-*." + ext)), image_size=SIZE, shuffle_buffer=16))
  c.update(overrides)
  return c


@pytest.mark.parametrize("fmt", FORMATS)
def test_shards_hold_every_row_and_column_in_order(data, fmt):
  root, arrays = data
  c = config(root, fmt)
  batches = list(input_pipeline.eval_batches(c, "train", batch_size=32))
  assert [len(b["label"]) for b in batches] == [32, 32, 26]  # the last batch is smaller
  images, labels, captions = arrays["train"]
  np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), images)  # PNG: lossless
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), labels)
  assert list(np.concatenate([b["caption"] for b in batches])) == list(captions)
  assert batches[0]["caption"].dtype == object and batches[0]["label"].dtype == np.int32
  assert input_pipeline.class_names(c, "test") == list(shapes.CLASS_NAMES)
  assert input_pipeline.num_examples(c, "train") == TRAIN
  with open(root / fmt / "info.json") as f:
    info = json.load(f)
  assert info["columns"] == {"image": "image", "label": "int", "caption": "text"}
  assert info["splits"]["train"]["rows"] == TRAIN and len(info["splits"]["train"]["shards"]) == 5


def read_share(source, reader_id: int, num_readers: int, seed=0) -> list[int]:
  """Labels-free identity of every row reader `reader_id` reads in one epoch: its image digests."""
  spec = reader.ReadSpec(reader_id, num_readers, seed, shuffle=True, repeat=False, shuffle_buffer=16, chunk=8)
  runner = reader.TaskRunner(source, None)
  rows = [
    x.tobytes()
    for host, _ in reader.read_batches(source, spec, reader.initial_state(source), runner, 8, partial=True)
    for x in host["image"]
  ]
  return rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_processes_read_disjoint_shares_covering_the_data(data, fmt):
  root, arrays = data
  source = sources.get_source(config(root, fmt), "train")
  first, second = read_share(source, 0, 2), read_share(source, 1, 2)
  assert not set(first) & set(second)
  assert sorted(first + second) == sorted(x.tobytes() for x in arrays["train"][0])
  assert read_share(source, 0, 1) != read_share(source, 0, 1, seed=1)  # shuffled, by the seed


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_after_k_batches_equals_a_straight_read(data, fmt, sharding):
  root, _ = data

  def build():
    return input_pipeline.build(config(root, fmt), split="train", global_batch_size=16, sharding=sharding, seed=3)

  straight = build()
  expected = [np.asarray(next(straight)["image"]) for _ in range(9)]  # 144 rows: into the second epoch
  first = build()
  for _ in range(4):
    next(first)
  state = json.loads(json.dumps(first.get_state()))
  resumed = build()
  resumed.set_state(state)
  for want in expected[4:]:
    np.testing.assert_array_equal(np.asarray(next(resumed)["image"]), want)
  assert state["step"] == 4 and state["skipped"] == 0
  for it in (straight, first, resumed):
    it.close()


def test_worker_processes_give_the_batches_of_the_reading_thread(data, sharding):
  root, _ = data

  def batches(workers):
    c = config(root, "tar", workers=workers)
    it = input_pipeline.build(c, split="train", global_batch_size=16, sharding=sharding, seed=0)
    out = [np.asarray(next(it)["caption"]) for _ in range(7)]
    it.close()
    return out

  np.testing.assert_array_equal(batches(2), batches(0))


def test_resume_with_another_process_count_is_one_clear_error(data, sharding):
  root, _ = data
  it = input_pipeline.build(config(root, "tar"), split="train", global_batch_size=16, sharding=sharding, seed=0)
  state = dict(it.get_state(), process_block=[0, 2])
  with pytest.raises(ValueError, match=r"saved by reader 0 of 2.*reader 0 of 1.*same number of processes"):
    it.set_state(state)
  with pytest.raises(ValueError, match="shuffle_buffer=99"):
    it.set_state(dict(it.get_state(), shuffle_buffer=99))
  source = sources.get_source(config(root, "tar"), "train")
  with pytest.raises(ValueError, match="5 shards for 6 readers"):
    reader.check_share(source, reader.ReadSpec(0, 6))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_wrong_glob_or_an_empty_shard_set_fails_at_start(data, fmt, sharding, tmp_path):
  root, _ = data
  build = lambda c: input_pipeline.build(c, split="train", global_batch_size=16, sharding=sharding, seed=0)  # noqa: E731
  with pytest.raises(ValueError, match="No .* shards at"):
    build(config(root, fmt, path=str(tmp_path / "nothing-*.x")))
  with pytest.raises(ValueError, match="2 of 7 .* do not exist"):
    build(config(root, fmt, path=str(root / fmt / ("train-{00000..00006}." + fmt))))
  (tmp_path / "train-00000.tar").write_bytes(b"")
  (tmp_path / "train-00000.array_record").write_bytes(b"")
  with pytest.raises(ValueError, match="ArrayRecord|No readable sample"):
    build(config(root, fmt, path=str(tmp_path / ("train-*." + fmt))))


def test_brace_patterns_expand_like_the_shell():
  assert shards.expand_braces("d/{000..002}.tar") == ["d/000.tar", "d/001.tar", "d/002.tar"]
  assert shards.expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
  assert shards.expand_braces("d/{split}.x") == ["d/{split}.x"]


def _write_tfrecords(path, n: int) -> None:
  import tensorflow as tf

  png = images.encode_png(np.full((8, 8, 3), 7, np.uint8))
  with tf.io.TFRecordWriter(str(path)) as w:
    for i in range(n):
      feature = dict(
        image=tf.train.Feature(bytes_list=tf.train.BytesList(value=[png + bytes(i % 7)])),
        label=tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 10])),
      )
      w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_tfrecord_host_memory_does_not_grow_with_the_dataset(tmp_path):
  def peak(n: int) -> int:
    _write_tfrecords(tmp_path / f"r{n}.tfrecord", n)
    c = default.data()
    c.tokenizer = "bytes"
    c.update(dict(name="tfrecord", path=str(tmp_path / f"r{n}.tfrecord"), image_size=8))
    tracemalloc.start()
    batches = input_pipeline.eval_batches(c, "train", batch_size=16, limit=32)
    assert sum(len(b["label"]) for b in batches) == 32
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top

  small, large = peak(200), peak(2000)
  # Building the source and reading 2 batches touches the same records; 1800 more records of ~100 bytes held in a
  # list (the old reader) would add > 180 kB.
  assert large < small + 50_000, (small, large)


def test_array_record_and_tar_paths_import_no_tensorflow(data):
  root, _ = data
  code = (
    "import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None\n"
    "import input_pipeline\n"
    "from configs import default\n"
    "for fmt, ext in (('array_record', 'array_record'), ('tar', 'tar')):\n"
    "  c = default.data(); c.tokenizer = 'bytes'\n"
    f"  c.update(dict(name=fmt, path='{root}/' + fmt + '/{{split}}-*.' + ext, image_size={SIZE}))\n"
    "  assert len(next(iter(input_pipeline.eval_batches(c, 'test', batch_size=8)))['image']) == 8\n"
    "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    "assert 'jax' not in sys.modules  # eval_batches and worker processes stay light\n"
    "print('ok')"
  )
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.strip().endswith("ok")


def test_converter_skips_and_counts_corrupt_inputs(tmp_path, capsys):
  images_rgb = shapes.render(0, "train", np.arange(4), image_size=SIZE)[0]
  for i, x in enumerate(images_rgb):
    (tmp_path / f"{i}.png").write_bytes(images.encode_png(x))
  (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff truncated")
  lines = [json.dumps({"image": f"{i}.png", "text": f"caption {i}"}) for i in range(4)]
  lines += [json.dumps({"image": "bad.jpg", "text": "corrupt"}), json.dumps({"image": "0.png", "text": ""}), "[1]"]
  (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
  args = [f"--input={tmp_path}/{{split}}.jsonl", f"--output={tmp_path}/out", "--format=tar", "--shard_size=3"]
  assert convert.main(args) == 0
  summary = capsys.readouterr().out
  assert "wrote 4 rows in 2 shards" in summary and "skipped 3 unreadable inputs" in summary
  with open(tmp_path / "out" / "info.json") as f:
    info = json.load(f)["splits"]["train"]
  assert (info["rows"], info["skipped"], sorted(info["shards"].values())) == (4, 3, [1, 3])
  c = config(tmp_path, "tar", path=str(tmp_path / "out" / "{split}-*.tar"))
  assert [str(t) for b in input_pipeline.eval_batches(c, "train", batch_size=8) for t in b["caption"]] == [
    f"caption {i}" for i in range(4)
  ]
  assert convert.main([f"--input={tmp_path}/nothing.jsonl", f"--output={tmp_path}/o2"]) == 2
  assert "No input at" in capsys.readouterr().err


def test_input_scale_benchmark_workload_runs(tmp_path):
  from benchmarks import input_scale

  path, _ = input_scale.prepare(str(tmp_path), 40, "tar")
  result = input_scale.measure(path, "tar", 0, batches=3, batch_size=8)
  assert result["images_per_s"] > 0 and result["peak_rss_mb"] > 0

"""End to end from shards written by the converter: tiny SimCLR from ArrayRecord, tiny CLIP from WebDataset tar."""

import json
import os

import numpy as np

from configs import clip_shapes, simclr_shapes
from input_pipeline import convert, shapes
from records import webdataset
from train import trainer


def shards(config, out, fmt: str) -> str:
  """The config's shapes splits (images, labels, captions, class names) as an npz, as a user would bring them,
  converted to `fmt` shards under `out`; returns the data.path pattern."""
  out.mkdir()
  arrays = {}
  for split, rows in (("train", config.data.train_size), ("test", config.data.test_size)):
    images, labels, captions = shapes.render(0, split, np.arange(rows), image_size=config.data.image_size)
    arrays.update({f"{split}_images": images, f"{split}_labels": labels, f"{split}_captions": captions.astype(str)})
  np.savez(out / "shapes.npz", class_names=np.array(shapes.CLASS_NAMES), **arrays)
  for split in ("train", "test"):
    args = [
      f"--input={out / 'shapes.npz'}",
      f"--output={out}",
      f"--format={fmt}",
      "--shard_size=64",
      f"--split={split}",
    ]
    assert convert.main(args) == 0
  return os.path.join(str(out), "{split}-*." + fmt)


def test_simclr_from_array_record_shards_equals_the_in_memory_run(tmp_path, tiny_simclr_run):
  # The shards hold the rows the shapes source renders, in its order: the same batches, so the same results.
  in_memory_config, _, in_memory = tiny_simclr_run
  config = simclr_shapes.get_config("tiny")
  config.data.update(dict(name="array_record", path=shards(config, tmp_path / "data", "array_record")))
  assert config.total_steps == in_memory_config.total_steps
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
  for key in ("knn/knn_top1", "linear_probe/linear_probe_top1", "health/alignment", "health/uniformity"):
    assert results[key] == in_memory[key], key


def test_clip_trains_from_tar_shards_with_worker_processes_and_logs_a_skipped_sample(tmp_path):
  config = clip_shapes.get_config("tiny")
  path = shards(config, tmp_path / "data", "tar")
  # One more train shard, holding a sample whose image is not an image: skipped, counted, logged as data/skipped.
  webdataset.write_shard(str(tmp_path / "data" / "train-99999.tar"), [("bad", {"jpg": b"not a jpeg", "txt": b"a cat"})])
  config.data.update(dict(name="tar", path=path, workers=1, shuffle_buffer=32))
  config.total_steps = config.data.train_size // config.batch_size + 1  # past the end of the first epoch
  results = trainer.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
  # Zero-shot over the class names read from the shards' info.json; retrieval over the test captions.
  assert 0.0 <= results["zero_shot/zero_shot_top1"] <= 1.0 and 0.0 <= results["retrieval/i2t_r@1"] <= 1.0
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    logged = [line["data/skipped"] for line in map(json.loads, f) if "data/skipped" in line]
  assert logged[-1] == 1 and logged == sorted(logged)

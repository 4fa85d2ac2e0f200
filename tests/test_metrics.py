"""train/metrics.py: a live TensorBoard and a reader of metrics.jsonl see each write at once; a partial last line left
by a killed run is cut by the next writer."""

import json
import os
import struct

import numpy as np
from tensorboard.compat.proto import event_pb2

from train.metrics import MetricWriter


def _events(path: str) -> list[event_pb2.Event]:
  """The records of a TensorBoard event file (TFRecord framing: length u64, its CRC u32, data, data CRC u32)."""
  events = []
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      events.append(event_pb2.Event.FromString(f.read(length)))
      f.read(4)
  return events


def test_each_write_reaches_the_event_file_and_the_jsonl_while_the_writer_is_open(tmp_path):
  writer = MetricWriter(str(tmp_path))
  writer.write(10, {"train/loss": 2.5})
  writer.write(20, {"train/loss": 1.5, "train/learning_rate": 0.1})
  (name,) = os.listdir(tmp_path / "tb")
  scalars = {(e.step, v.tag): v.simple_value for e in _events(tmp_path / "tb" / name) for v in e.summary.value}
  # simple_value is a float32
  assert scalars == {
    (10, "train/loss"): 2.5,
    (20, "train/loss"): 1.5,
    (20, "train/learning_rate"): float(np.float32(0.1)),
  }
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [10, 20]
  writer.close()


def test_a_partial_last_line_of_a_killed_run_is_cut_by_the_next_writer(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write('{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/lo')
  writer = MetricWriter(str(tmp_path))
  writer.write(2, {"train/loss": 1.0})
  writer.close()
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line) for line in f] == [{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.0}]

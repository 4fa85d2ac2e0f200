"""Metrics to JSONL and TensorBoard event files, both flushed at every write, so a live TensorBoard shows the run.

Events are written with tensorboard's pure-Python record writer: `tensorboard.summary.writer.EventFileWriter` would
import TensorFlow when it is installed, and the trainer must not.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping

import numpy as np


class MetricWriter:
  """Appends `{"step": s, **scalars}` lines to `metrics.jsonl` and scalar summaries to `tb/` in the workdir.

  Each `write` (the trainer's every log step) reaches the files before it returns. A run killed mid-line (or stopped
  by a full disk) leaves a partial last line in metrics.jsonl; the next run's writer cuts it, so that every line parses.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._file = self._records = None
    if enabled:
      from tensorboard.compat.proto import event_pb2
      from tensorboard.summary.writer.record_writer import RecordWriter

      _cut_partial_last_line(self.jsonl_path)
      tb_dir = os.path.join(workdir, "tb")
      os.makedirs(tb_dir, exist_ok=True)
      name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
      self._file = open(os.path.join(tb_dir, name), "wb")
      self._records = RecordWriter(self._file)
      self._records.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
      self._file.flush()

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    from tensorboard.compat.proto import event_pb2, summary_pb2

    clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
    with open(self.jsonl_path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in clean.items()])
    self._records.write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary).SerializeToString())
    self._file.flush()

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = self._records = None


def _cut_partial_last_line(path: str) -> None:
  """Truncates `path` after its last newline (a line is far shorter than the 64 kB looked at)."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - 65536))
    tail = f.read()
    if tail and not tail.endswith(b"\n"):
      f.truncate(size - len(tail) + tail.rfind(b"\n") + 1)

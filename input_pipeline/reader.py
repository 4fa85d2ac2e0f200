"""Deterministic, resumable reading of one reader's share of a source into host batches; decoding in worker processes.

Order. Reader r of R (one per process that owns distinct batch rows) reads
- a random-access `Source` of N rows: epoch e visits 0..N-1 in the order `default_rng([seed, e]).permutation(N)`
  (held as int32 in the reading process: 4 bytes a row, less than an ArrayRecord index), the identity without
  shuffle; the reader takes positions r, r + R, r + 2R, ... of it;
- a `StreamSource`: shards r, r + R, ... of the sorted shard list, in an order permuted per epoch, each front to
  back; the records pass a window shuffle: each window of `shuffle_buffer` consecutive records is permuted (as
  grain's WindowShuffle), so host memory holds one window of encoded records, whatever the dataset's size.
Readers never share a row and together cover the data; a stream needs at least R shards.

Work. The reader's stream is cut into tasks of at most `chunk` rows (row indices, or raw records, with positions);
`TaskRunner` decodes and transforms them in order, in this thread or in `workers` spawned processes, and the rows
are regrouped into batches in order, so batches do not depend on the number of workers.

State (JSON). Random access: {"epoch", "index"}: position after the last row delivered in the reader's share of
the epoch. Stream: {"epoch", "shard" (position in the epoch's shard order), "offset" (record of that shard where
the current window starts), "emitted" (rows of that window delivered)}. Both: "step" (batches delivered),
"skipped" (unreadable rows before that position). Reading from a state gives the same rows in the same order as
reading on from where it was taken.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from input_pipeline.sources import AnySource, StreamSource

HostTransform = Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]
ROW_KEYS = ("epoch", "index")
STREAM_KEYS = ("epoch", "shard", "offset", "emitted")


@dataclasses.dataclass(frozen=True)
class ReadSpec:
  """What one reader reads and in which order."""

  reader: int = 0
  num_readers: int = 1
  seed: int = 0
  shuffle: bool = True
  repeat: bool = True
  shuffle_buffer: int = 1000  # streams: records per shuffle window
  chunk: int = 256  # rows per task


@dataclasses.dataclass
class Task:
  """Rows to read: `payload` row indices [n] (random access) or raw records (streams); ids [n, 2] (epoch, example
  id) seed per-example host randomness; cursors [n, k]: the reader's position after each row."""

  payload: Any
  ids: np.ndarray
  cursors: np.ndarray
  epoch: int


@dataclasses.dataclass
class Chunk:
  """A task's valid rows (transformed), their cursors, and the invalid rows before each and after the last."""

  columns: dict[str, np.ndarray]
  cursors: np.ndarray
  invalid_before: np.ndarray
  trailing_invalid: int
  epoch: int


def initial_state(source: AnySource) -> dict:
  keys = STREAM_KEYS if isinstance(source, StreamSource) else ROW_KEYS
  return {**dict.fromkeys(keys, 0), "step": 0, "skipped": 0}


def check_share(source: AnySource, spec: ReadSpec) -> None:
  """ValueError when reader `spec.reader` of `spec.num_readers` would get no data."""
  if isinstance(source, StreamSource):
    if len(source.shards) < spec.num_readers:
      raise ValueError(
        f"{len(source.shards)} shards for {spec.num_readers} readers (processes): each reader reads whole shards. "
        "Write at least one shard per process (a smaller --shard_size in input_pipeline.convert)."
      )
  elif spec.reader >= len(source):
    raise ValueError(f"The dataset has {len(source)} examples, fewer than the {spec.num_readers} readers.")


def epoch_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
  """The visiting order of epoch `epoch`: `np.random.default_rng([seed, epoch]).permutation(num_rows)`, held as int32
  (4 bytes a row) below 2^31 rows."""
  order = np.arange(num_rows, dtype=np.int32 if num_rows < 2**31 else np.int64)
  np.random.default_rng([seed, epoch]).shuffle(order)  # the same draws as permutation(): the order does not change
  return order


def row_tasks(num_rows: int, spec: ReadSpec, state: dict) -> Iterator[Task]:
  """Tasks of a random-access source from `state` on."""
  per_epoch = len(range(spec.reader, num_rows, spec.num_readers))
  epoch, index, order = state["epoch"], state["index"], None
  while True:
    if index >= per_epoch:
      epoch, index, order = epoch + 1, 0, None
    if epoch > 0 and not spec.repeat:
      return
    if order is None and spec.shuffle:
      order = epoch_order(num_rows, spec.seed, epoch)
    positions = np.arange(index, min(per_epoch, index + spec.chunk))
    rows = spec.reader + positions * spec.num_readers
    if spec.shuffle:
      rows = order[rows].astype(np.int64)
    ids = np.stack([np.full(len(rows), epoch), rows], -1)
    cursors = np.stack([np.full(len(rows), epoch), positions + 1], -1)
    yield Task(rows, ids, cursors, epoch)
    index = int(positions[-1]) + 1


def _windows(source: StreamSource, order: list[int], state: dict, size: int) -> Iterator[list[tuple]]:
  """Windows of up to `size` records [(record, shard position, offset, shard id)] from (shard, offset) on."""
  window = []
  for position in range(state["shard"], len(order)):
    skip = state["offset"] if position == state["shard"] else 0
    for k, record in enumerate(source.records(order[position], skip)):
      window.append((record, position, skip + k, order[position]))
      if len(window) == size:
        yield window
        window = []
  if window:
    yield window


def stream_tasks(source: StreamSource, spec: ReadSpec, state: dict) -> Iterator[Task]:
  """Tasks of a stream source from `state` on."""
  mine = list(range(spec.reader, len(source.shards), spec.num_readers))
  state = dict(state)
  while spec.repeat or state["epoch"] == 0:
    epoch = state["epoch"]
    order = mine
    if spec.shuffle:
      order = [mine[i] for i in np.random.default_rng([spec.seed, epoch]).permutation(len(mine))]
    window_size, read = max(1, spec.shuffle_buffer) if spec.shuffle else spec.chunk, 0
    for window in _windows(source, order, state, window_size):
      read += len(window)
      _, start_position, start_offset, _ = window[0]
      if spec.shuffle:
        rng = np.random.default_rng([spec.seed, epoch, start_position, start_offset])
        window = [window[k] for k in rng.permutation(len(window))]
      for lo in range(state["emitted"], len(window), spec.chunk):
        rows = window[lo : lo + spec.chunk]
        ids = np.asarray([(epoch, (shard << 32) | offset) for _, _, offset, shard in rows], np.int64)
        cursors = np.zeros((len(rows), 4), np.int64)
        cursors[:, :3] = epoch, start_position, start_offset
        cursors[:, 3] = np.arange(lo + 1, lo + len(rows) + 1)  # rows of the window emitted after each
        yield Task([r[0] for r in rows], ids, cursors, epoch)
      state["emitted"] = 0
    if not read:
      raise RuntimeError(f"The shards of reader {spec.reader} of {spec.num_readers} hold no record.")
    state = {**state, "epoch": epoch + 1, "shard": 0, "offset": 0, "emitted": 0}


def tasks(source: AnySource, spec: ReadSpec, state: dict) -> Iterator[Task]:
  if isinstance(source, StreamSource):
    return stream_tasks(source, spec, state)
  return row_tasks(len(source), spec, state)


def run_task(source: AnySource, transform: HostTransform | None, task: Task) -> Chunk:
  """Reads / decodes a task's rows, keeps the valid ones and applies the host transform to them."""
  if isinstance(source, StreamSource):
    columns, valid = source.decode(task.payload)
  else:
    columns, valid = source.read(task.payload)
  columns = {k: v[valid] for k, v in columns.items()}
  if transform is not None and valid.any():
    columns = transform(columns, task.ids[valid])
  invalid_so_far = np.cumsum(~valid)
  at_valid = invalid_so_far[valid]
  invalid_before = np.diff(at_valid, prepend=0)
  trailing = int(invalid_so_far[-1] - (at_valid[-1] if len(at_valid) else 0)) if len(valid) else 0
  return Chunk(columns, task.cursors[valid], invalid_before, trailing, task.epoch)


# ---------------------------------------------------------------------------------------------------------------
# Worker processes.

_WORKER: tuple | None = None


def _init_worker(setup: Callable[..., tuple], args: tuple) -> None:
  global _WORKER
  _WORKER = setup(*args)


def _run_in_worker(task: Task) -> Chunk:
  return run_task(*_WORKER, task)


class TaskRunner:
  """Runs tasks in order: in the calling thread (workers=0), or in `workers` spawned processes, each of which calls
  `setup(*setup_args) -> (source, transform)` once (a module-level function: sources are rebuilt, not pickled)."""

  def __init__(
    self,
    source: AnySource,
    transform: HostTransform | None,
    workers: int = 0,
    setup: Callable[..., tuple] | None = None,
    setup_args: tuple = (),
  ):
    if workers and setup is None:
      raise ValueError("Worker processes need a setup function that rebuilds the source.")
    self.source, self.transform, self.workers = source, transform, workers
    self.setup, self.setup_args = setup, setup_args
    self._executor: concurrent.futures.ProcessPoolExecutor | None = None

  def map(self, tasks: Iterator[Task]) -> Iterator[Chunk]:
    if not self.workers:
      for task in tasks:
        yield run_task(self.source, self.transform, task)
      return
    if self._executor is None:
      self._executor = concurrent.futures.ProcessPoolExecutor(
        self.workers,
        mp_context=multiprocessing.get_context("spawn"),  # fork is unsafe in a process running JAX threads
        initializer=_init_worker,
        initargs=(self.setup, self.setup_args),
      )
    pending = collections.deque()
    for task in tasks:
      pending.append(self._executor.submit(_run_in_worker, task))
      if len(pending) >= 2 * self.workers:
        yield self._result(pending.popleft())
    while pending:
      yield self._result(pending.popleft())

  @staticmethod
  def _result(future: concurrent.futures.Future) -> Chunk:
    try:
      return future.result()
    except concurrent.futures.process.BrokenProcessPool:
      raise RuntimeError(
        "A data worker process died or could not start: out of memory (lower data.workers or the batch size), "
        'killed, or a script without the `if __name__ == "__main__":` guard that spawned workers need.'
      ) from None

  def close(self) -> None:
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=True)
      self._executor = None


def cursor_state(source: AnySource, cursor: np.ndarray) -> dict:
  keys = STREAM_KEYS if isinstance(source, StreamSource) else ROW_KEYS
  return {k: int(v) for k, v in zip(keys, cursor)}


def read_batches(
  source: AnySource,
  spec: ReadSpec,
  state: dict,
  runner: TaskRunner,
  size: int,
  partial: bool = False,
  totals: dict | None = None,
) -> Iterator[tuple[dict[str, np.ndarray], dict]]:
  """(host batch of `size` rows, state after it) from `state` on; with `partial`, a smaller last batch too.

  At the end of a finite read, `totals["skipped"]` (when given) counts every unreadable row met. RuntimeError when a
  whole epoch passes without one readable row (instead of looping forever).
  """
  parts, got, pending = [], 0, 0
  step, skipped, last_valid_epoch = state["step"], state["skipped"], state["epoch"]
  cursor = None
  for chunk in runner.map(tasks(source, spec, state)):
    n, start = len(chunk.cursors), 0
    while start < n:
      take = min(size - got, n - start)
      parts.append({k: v[start : start + take] for k, v in chunk.columns.items()})
      skipped += pending + int(chunk.invalid_before[start : start + take].sum())
      pending, got, start = 0, got + take, start + take
      cursor = chunk.cursors[start - 1]
      if got == size:
        step += 1
        yield _concat(parts), {**cursor_state(source, cursor), "step": step, "skipped": skipped}
        parts, got = [], 0
    pending += chunk.trailing_invalid
    if n:
      last_valid_epoch = int(chunk.cursors[-1][0])
    elif chunk.epoch >= last_valid_epoch + 2:
      raise RuntimeError("No readable example in a whole epoch of the data: every record is corrupt or empty.")
  if partial and got:
    yield _concat(parts), {**cursor_state(source, cursor), "step": step + 1, "skipped": skipped}
  if totals is not None:
    totals["skipped"] = skipped + pending


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

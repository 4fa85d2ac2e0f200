"""Checkpointable iteration over a source into global, sharded `jax.Array` batches, prefetched to device.

The global batch is split into row blocks, one per distinct set of batch rows owned by a process (from the
sharding: processes that hold the same rows read the same block, usually one per `jax.process_index()`). Block r of
R is read by reader r of R (see `reader.py` for the order, the worker processes and the state), so processes never
share an example and together cover the data; a reader skips (and counts) rows its source reports invalid and reads
further to fill its rows, so one bad file changes no other reader's data.

State (JSON): the reader's position, "step" (batches delivered), "skipped" (unreadable rows so far) and
"process_block" [r, R]. `set_state(get_state())` on a fresh iterator continues with exactly the batches the old
one would have produced; a state saved with another number of readers is refused with one clear message (the
shares would differ), not resharded. A background thread keeps `prefetch` batches on device ahead.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import queue
import threading
import weakref
from collections.abc import Callable, Iterator

import jax
import numpy as np

from input_pipeline import reader, sources


@dataclasses.dataclass(frozen=True)
class RowBlock:
  """This process's rows of the global batch: [start, start + size) and its reader id among num_readers."""

  start: int
  size: int
  reader: int
  num_readers: int


def batch_shards(sharding: jax.sharding.Sharding) -> int:
  """How many ways `sharding` splits the leading (batch) dimension."""
  if isinstance(sharding, jax.sharding.NamedSharding):
    spec = tuple(sharding.spec)
    axes = spec[0] if spec else None
    if axes is None:
      return 1
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(sharding.mesh.shape[a] for a in axes)
  return len(sharding.device_set)


def row_block(sharding: jax.sharding.Sharding, global_batch_size: int) -> RowBlock:
  """The contiguous batch rows this process's devices own."""
  slices = [idx[0] for idx in sharding.addressable_devices_indices_map((global_batch_size,)).values()]
  starts = [s.start or 0 for s in slices]
  stops = [global_batch_size if s.stop is None else s.stop for s in slices]
  start, stop = min(starts), max(stops)
  size = stop - start
  covered = np.zeros(global_batch_size, bool)
  for a, b in zip(starts, stops):
    covered[a:b] = True
  if covered.sum() != size:
    raise ValueError(
      "This process's devices do not own a contiguous block of batch rows; use a mesh whose "
      "batch axis is laid out process by process (jax.make_mesh does this)."
    )
  return RowBlock(start, size, start // size, global_batch_size // size)


@dataclasses.dataclass(frozen=True)
class ReadPlan:
  """What one process reads and how it ships it; the prefetch thread holds only this, never the iterator,
  so a dropped iterator is garbage-collected and its thread stops."""

  source: sources.AnySource
  sharding: jax.sharding.Sharding
  global_batch_size: int
  block: RowBlock
  spec: reader.ReadSpec
  runner: reader.TaskRunner

  def host_batches(self, state: dict) -> Iterator[tuple[dict[str, np.ndarray], dict]]:
    """Yields (this process's rows of the next batch without text columns, state after it)."""
    for host, after in reader.read_batches(self.source, self.spec, state, self.runner, self.block.size):
      yield {k: v for k, v in host.items() if k not in sources.string_columns(host)}, after

  def to_device(self, host: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {
      k: jax.make_array_from_process_local_data(self.sharding, v, (self.global_batch_size,) + v.shape[1:])
      for k, v in host.items()
    }


def _put(out: queue.Queue, item, stop: threading.Event) -> bool:
  """Blocks until `item` is queued (True) or `stop` is set (False)."""
  while not stop.is_set():
    try:
      out.put(item, timeout=0.1)
      return True
    except queue.Full:
      continue
  return False


def _produce(plan: ReadPlan, state: dict, out: queue.Queue, stop: threading.Event) -> None:
  """Prefetch thread: queues (device batch, state after it), then StopIteration or the exception raised."""
  try:
    for host, after in plan.host_batches(state):
      if not _put(out, (plan.to_device(host), after), stop):
        return
    _put(out, StopIteration(), stop)
  except BaseException as e:  # Re-raised in the consumer's thread.
    _put(out, e, stop)


# Iterators whose prefetch thread runs. At interpreter exit they are stopped before Python kills daemon threads: a
# thread killed inside jax's C++ (a device_put) aborts the process ("FATAL: exception not rethrown").
_RUNNING: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_running_iterators() -> None:
  for iterator in list(_RUNNING):
    iterator.close()


class BatchIterator(Iterator[dict]):
  """Python iterator of global batches: dict of `jax.Array`s with leading dim = global batch, sharded.

  `workers` > 0 decodes and transforms in that many spawned processes, each rebuilding the source and the
  transform with `worker_setup(*worker_args) -> (source, transform)`; the batches are the same as with 0.
  """

  def __init__(
    self,
    source: sources.AnySource,
    *,
    global_batch_size: int,
    sharding: jax.sharding.Sharding,
    seed: int,
    shuffle: bool = True,
    repeat: bool = True,
    transform: reader.HostTransform | None = None,
    prefetch: int = 2,
    workers: int = 0,
    shuffle_buffer: int = 1000,
    worker_setup: Callable[..., tuple] | None = None,
    worker_args: tuple = (),
  ):
    block = row_block(sharding, global_batch_size)
    spec = reader.ReadSpec(
      block.reader, block.num_readers, seed, shuffle, repeat, shuffle_buffer, chunk=min(block.size, 256)
    )
    reader.check_share(source, spec)
    runner = reader.TaskRunner(source, transform, workers, worker_setup, worker_args)
    self.plan = ReadPlan(source, sharding, global_batch_size, block, spec, runner)
    self.prefetch = prefetch
    self._state = reader.initial_state(source)
    self._thread: threading.Thread | None = None
    self._queue: queue.Queue | None = None
    self._stop: threading.Event | None = None

  # -- state --------------------------------------------------------------------------------------------------
  def get_state(self) -> dict:
    """JSON-serialisable position after the last batch returned by `next`; "skipped" counts every unreadable or
    malformed row so far (including those dropped when the source was built)."""
    block = self.plan.block
    state = dict(self._state, process_block=[block.reader, block.num_readers])
    if isinstance(self.plan.source, sources.StreamSource):
      state["shuffle_buffer"] = self.plan.spec.shuffle_buffer
    state["skipped"] += self.plan.source.skipped_at_load
    return state

  def set_state(self, state: dict) -> None:
    """Continue exactly after the batch at which `state` was taken; ValueError for a state of another topology,
    another kind of source or another shuffle buffer."""
    saved, block = state.get("process_block"), self.plan.block
    if saved is not None and list(saved) != [block.reader, block.num_readers]:
      raise ValueError(
        f"The data position was saved by reader {saved[0]} of {saved[1]} (processes owning distinct batch rows); "
        f"this process is reader {block.reader} of {block.num_readers}. Resume with the same number of processes "
        "and devices, or start a new run from the checkpoint's parameters."
      )
    expected = reader.initial_state(self.plan.source)
    if set(expected) - set(state):
      raise ValueError(f"The data position {state} is not one of this source (keys {sorted(expected)}).")
    buffer = state.get("shuffle_buffer", self.plan.spec.shuffle_buffer)
    if buffer != self.plan.spec.shuffle_buffer:
      raise ValueError(
        f"The data position was saved with data.shuffle_buffer={buffer}, not {self.plan.spec.shuffle_buffer}: "
        "the order of the records would differ. Resume with the same value."
      )
    self._shutdown()
    self._state = {k: int(state[k]) for k in expected}
    self._state["skipped"] -= self.plan.source.skipped_at_load

  @property
  def skipped(self) -> int:
    """Rows skipped: malformed at load plus unreadable while iterating."""
    return self.get_state()["skipped"]

  # -- prefetching iteration ----------------------------------------------------------------------------------
  def __next__(self) -> dict[str, jax.Array]:
    if self._thread is None:
      self._queue, self._stop = queue.Queue(maxsize=max(1, self.prefetch)), threading.Event()
      self._thread = threading.Thread(
        target=_produce,
        args=(self.plan, dict(self._state), self._queue, self._stop),
        daemon=True,
        name="input_pipeline",
      )
      self._thread.start()
      _RUNNING.add(self)
    item = self._queue.get()
    if isinstance(item, BaseException):
      self._shutdown()
      raise item
    batch, self._state = item
    return batch

  def __iter__(self):
    return self

  def _shutdown(self) -> None:
    if self._thread is not None:
      self._stop.set()
      while self._thread.is_alive():
        try:
          self._queue.get(timeout=0.05)
        except queue.Empty:
          pass
      self._thread = self._queue = self._stop = None
    _RUNNING.discard(self)

  def close(self) -> None:
    """Stops the prefetch thread and the worker processes; `next` afterwards restarts them from the current state."""
    self._shutdown()
    self.plan.runner.close()

  def __del__(self):
    if getattr(self, "_stop", None) is not None:
      self._stop.set()

"""Checkpointable iteration over a random-access source into global, sharded `jax.Array` batches.

Order: epoch e visits the source in `np.random.default_rng([seed, e]).permutation(N)` (or 0..N-1 without shuffle).
The global batch is split into row blocks, one per distinct set of batch rows owned by a process (from the
sharding: processes that hold the same rows read the same block). Reader r of R takes stream positions r, r+R,
r+2R, ... of each epoch, so readers never share an example and together cover the epoch. A reader skips (and
counts) rows its source reports invalid and reads further to fill its rows, so one bad file changes no other
reader's data.

State (JSON): {"epoch", "index" (position in this reader's share of the epoch), "step" (batches delivered),
"skipped" (invalid rows skipped so far)}. `set_state(get_state())` on a fresh iterator continues with exactly
the batches the old one would have produced. A background thread keeps `prefetch` batches on device ahead.
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

from input_pipeline import sources

HostTransform = Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]


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

  source: sources.Source
  sharding: jax.sharding.Sharding
  global_batch_size: int
  block: RowBlock
  seed: int
  shuffle: bool
  repeat: bool
  transform: HostTransform | None

  @property
  def batches_per_epoch(self) -> int:
    return len(self.source) // self.global_batch_size

  def epoch_share(self, epoch: int) -> np.ndarray:
    """This reader's dataset indices for `epoch`, in visiting order."""
    n = len(self.source)
    order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
    return order[self.block.reader :: self.block.num_readers]

  def host_batches(self, state: dict) -> Iterator[tuple[dict[str, np.ndarray], dict]]:
    """Yields (this process's rows of the next batch, state after it), skipping unreadable rows."""
    epoch, index, step, skipped = state["epoch"], state["index"], state["step"], state["skipped"]
    share = self.epoch_share(epoch)
    size = self.block.size
    while self.repeat or step < self.batches_per_epoch:
      parts, ids, got, read_without_valid = [], [], 0, 0
      while got < size:
        if index >= len(share):
          epoch, index = epoch + 1, 0
          share = self.epoch_share(epoch)
        take = share[index : index + size - got]
        columns, valid = self.source.read(take)
        parts.append({k: v[valid] for k, v in columns.items()})
        ids.append(np.stack([np.full(int(valid.sum()), epoch), take[valid]], -1))
        n_valid = int(valid.sum())
        got += n_valid
        skipped += len(take) - n_valid
        index += len(take)
        read_without_valid = 0 if n_valid else read_without_valid + len(take)
        if read_without_valid > len(self.source):
          raise RuntimeError(f"No readable example in {len(self.source)} rows of the source.")
      host = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
      if self.transform is not None:
        host = self.transform(host, np.concatenate(ids))
      host = {k: v for k, v in host.items() if k not in sources.string_columns(host)}
      step += 1
      yield host, {"epoch": epoch, "index": index, "step": step, "skipped": skipped}

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
  """Python iterator of global batches: dict of `jax.Array`s with leading dim = global batch, sharded."""

  def __init__(
    self,
    source: sources.Source,
    *,
    global_batch_size: int,
    sharding: jax.sharding.Sharding,
    seed: int,
    shuffle: bool = True,
    repeat: bool = True,
    transform: HostTransform | None = None,
    prefetch: int = 2,
  ):
    block = row_block(sharding, global_batch_size)
    if len(range(block.reader, len(source), block.num_readers)) == 0:
      raise ValueError(
        f"The dataset has {len(source)} examples, fewer than the {block.num_readers} readers of the global batch."
      )
    self.plan = ReadPlan(source, sharding, global_batch_size, block, seed, shuffle, repeat, transform)
    self.prefetch = prefetch
    self._state = {"epoch": 0, "index": 0, "step": 0, "skipped": 0}
    self._thread: threading.Thread | None = None
    self._queue: queue.Queue | None = None
    self._stop: threading.Event | None = None

  # -- state --------------------------------------------------------------------------------------------------
  def get_state(self) -> dict:
    """JSON-serialisable position after the last batch returned by `next`."""
    block = self.plan.block
    return dict(self._state, process_block=[block.reader, block.num_readers])

  def set_state(self, state: dict) -> None:
    """Continue exactly after the batch at which `state` was taken."""
    saved, block = state.get("process_block"), self.plan.block
    if saved is not None and list(saved) != [block.reader, block.num_readers]:
      raise ValueError(
        f"Iterator state was saved by reader {saved[0]} of {saved[1]}; this process is reader "
        f"{block.reader} of {block.num_readers}. Resume with the same topology."
      )
    self._shutdown()
    self._state = {k: int(state[k]) for k in ("epoch", "index", "step", "skipped")}

  @property
  def skipped(self) -> int:
    """Rows skipped: malformed at load plus unreadable while iterating."""
    return self.plan.source.skipped_at_load + self._state["skipped"]

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
    """Stops the prefetch thread; `next` afterwards restarts it from the current state."""
    self._shutdown()

  def __del__(self):
    if getattr(self, "_stop", None) is not None:
      self._stop.set()

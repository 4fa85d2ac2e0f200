"""Orbax checkpoints of the train state plus the data iterator position: the last K, and optionally the best one.

Orbax writes each step into a temporary directory and renames it only when complete, so a run killed mid-save leaves
no checkpoint that `latest_step()` would pick up. A finished checkpoint that no longer reads (truncated or missing
files, bad metadata) is skipped with one warning line by `restore_latest`, which falls back to the next older one; a
save that fails (disk full) raises CheckpointError and leaves the previous checkpoints untouched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _save_each_shard_once() -> None:
  """Makes orbax write each array shard from one replica instead of splitting it over the replicas.

  Replica-parallel saving (orbax's default off GPU) compiles a slicing program per array shape at the first save:
  10-20 s of a small model's first checkpoint on CPU. One writer per shard is orbax's own choice on GPU.
  """
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # the override is deliberate: no "overriding jax.Array" warning per process
  try:
    ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
    )
  finally:
    absl_logger.setLevel(level)


_save_each_shard_once()


class _OneLineOrbaxErrors(logging.Filter):
  """Orbax logs a failed save at ERROR with a traceback from each of its threads (about 80 lines each) before it
  raises; CheckpointError reports the failure with what to do, so these records keep one line each."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname:
      record.msg, record.args = " ".join(record.getMessage().split())[:300], ()
      record.exc_info = record.exc_text = None
    return True


logging.getLogger("absl").addFilter(_OneLineOrbaxErrors())


def _drop_failed_save_leftovers(unraisable) -> None:
  """sys.unraisablehook: once a save failed, its remaining TensorStore writes complete into orbax's closed event loop
  (and at exit its pending coroutines are collected), each printing a traceback (34 to 64 for a tiny model) that says
  nothing the CheckpointError does not."""
  text = str(unraisable.exc_value)
  if "Event loop is closed" not in text and "Python is likely shutting down" not in text:
    _previous_unraisablehook(unraisable)


_previous_unraisablehook, sys.unraisablehook = sys.unraisablehook, _drop_failed_save_leftovers


class CheckpointError(RuntimeError):
  """A checkpoint could not be saved, or none of a run's checkpoints reads; the message says where and what to do."""


class Checkpointer:
  """Saves/restores {"state": TrainState, "data": iterator positions} under `<workdir>/checkpoints/<step>`.

  Keeps the `max_to_keep` latest steps. With `best_metric` (an evaluation result's key) also keeps the step with the
  best value of it (`best_mode` "max" or "min") under `<workdir>/checkpoints_best/<step>`.
  """

  def __init__(
    self,
    workdir: str,
    *,
    max_to_keep: int = 3,
    async_save: bool = True,
    best_metric: str | None = None,
    best_mode: str = "max",
  ):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}.")
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self._in_flight: dict[str, int] = {}  # manager directory -> step of its async save not yet waited for
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save),
    )
    self.best_metric = best_metric or None
    self.best_manager = None
    if self.best_metric:
      self.best_manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints_best")),
        options=ocp.CheckpointManagerOptions(
          max_to_keep=1,
          create=True,
          enable_async_checkpointing=async_save,
          best_fn=lambda metrics: metrics[self.best_metric],
          best_mode=best_mode,
          keep_checkpoints_without_metrics=False,
        ),
      )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The step of the best checkpoint so far (None without `best_metric` or before the first evaluation)."""
    return None if self.best_manager is None else self.best_manager.best_step()

  def save(self, step: int, state: Any, data_state: dict, *, force: bool = True) -> None:
    """Saves `state` and this process's `data_state` (every process must call it: saving is collective).

    CheckpointError when this save, or the previous asynchronous one, failed (e.g. the disk is full).
    """
    self._save(self.manager, step, _save_args(state, data_state), force=force)

  def save_best(self, step: int, state: Any, data_state: dict, results: dict) -> None:
    """Offers the state evaluated as `results` to the best-checkpoint slot (kept when its metric is the best)."""
    if self.best_manager is None or step in self.best_manager.all_steps():
      return
    if self.best_metric not in results:
      raise KeyError(f"best_metric {self.best_metric!r} is not among the evaluation results {sorted(results)}.")
    metrics = {self.best_metric: float(results[self.best_metric])}
    self._save(self.best_manager, step, _save_args(state, data_state), metrics=metrics, force=True)

  def _save(self, manager: ocp.CheckpointManager, step: int, args: ocp.args.Composite, **kwargs) -> None:
    self._wait(manager)  # the previous save's error is reported under its own step
    try:
      manager.save(step, args=args, **kwargs)
    except Exception as error:
      raise _save_error(manager, step, error) from error
    self._in_flight[str(manager.directory)] = step

  def _wait(self, manager: ocp.CheckpointManager) -> None:
    """Waits for `manager`'s asynchronous save; orbax raises its write errors only here (or at the next save)."""
    step = self._in_flight.pop(str(manager.directory), None)
    try:
      manager.wait_until_finished()
    except Exception as error:
      raise _save_error(manager, step, error) from error

  def restore(self, abstract_state: Any, step: int | None = None, *, best: bool = False) -> tuple[Any, dict]:
    """Restores into the structure, dtypes and shardings of `abstract_state` (e.g. from jax.eval_shape + shardings).

    Returns (state, this process's data iterator position). `best` restores the best checkpoint instead of the latest.
    """
    manager = self.best_manager if best else self.manager
    if manager is None:
      raise ValueError("No best checkpoint is kept: set config.best_metric.")
    if step is None:
      step = manager.best_step() if best else manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"No finished checkpoint in {manager.directory}.")
    restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
    )
    return restored["state"], process_position(restored["data"], jax.process_index(), jax.process_count(), step)

  def restore_latest(self, abstract_state: Any, *, best: bool = False) -> tuple[Any, dict, int]:
    """(state, this process's data position, step) of the newest checkpoint that reads (`best`: the best one first).

    A checkpoint that fails to read is reported in one warning line and the next older one is tried. Unreadable ones
    are then moved to `<workdir>/checkpoints_unreadable/` (kept for inspection): left in place, a new save of their
    step would collide with them, and orbax's keep-the-last-K would count the damaged newest among the K and delete
    the readable ones. CheckpointError, naming the workdir, when none reads; FileNotFoundError when there is none.
    """
    manager = self.best_manager if best else self.manager
    if manager is None:
      raise ValueError("No best checkpoint is kept: set config.best_metric.")
    steps = sorted(manager.all_steps(), reverse=True)
    if best and manager.best_step() is not None:
      steps.remove(manager.best_step())
      steps.insert(0, manager.best_step())
    if not steps:
      raise FileNotFoundError(f"No finished checkpoint in {manager.directory}.")
    unreadable = []
    for step in steps:
      state, reason = None, "another process could not read it"
      try:
        state, data = self.restore(abstract_state, step, best=best)
      except Exception as error:  # orbax and TensorStore raise anything from ValueError to a bare Exception
        reason = _one_line(error)
      if not _on_every_process(state is not None):
        logging.warning(
          "Checkpoint %s is unreadable (%s); trying the next older one (unreadable ones are moved to %s_unreadable/).",
          manager.directory / str(step),
          reason,
          manager.directory,
        )
        unreadable.append(step)
        continue
      if unreadable:
        _set_aside(manager, unreadable, f"{manager.directory}_unreadable")
      return state, data, step
    raise CheckpointError(
      f"No readable checkpoint in the workdir {self.workdir}: steps {', '.join(map(str, steps))} of "
      f"{manager.directory} all fail to read (step {steps[-1]}: {reason}). Restore a good copy of the checkpoints, "
      "or move them away to start the run from scratch."
    )

  def wait(self) -> None:
    """Blocks until the asynchronous saves are written; CheckpointError if one failed."""
    for manager in (self.manager, self.best_manager):
      if manager is not None:
        self._wait(manager)

  def close(self) -> None:
    """Waits for the pending saves (CheckpointError if one failed), then releases orbax's threads."""
    try:
      self.wait()
    finally:
      for manager in (self.manager, self.best_manager):
        if manager is not None:
          manager.close()


def _one_line(error: BaseException, limit: int = 300) -> str:
  """`Type: message` of an exception's root cause on one line, without TensorStore's spec dumps, cut in the middle
  to at most `limit` characters (the end holds the OS error)."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  text = " ".join(str(error).split())
  text = f"{type(error).__name__}: " + re.split(r" \[tensorstore_spec=| See full TensorStore details", text)[0]
  return text if len(text) <= limit else f"{text[: limit // 2 - 3]} ... {text[-(limit // 2 - 2) :]}"


def _finished_steps(directory: os.PathLike) -> list[int]:
  """Steps of the finished checkpoints on disk (orbax names them by step; temporary ones carry a suffix)."""
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def _save_error(manager: ocp.CheckpointManager, step: int | None, error: Exception) -> CheckpointError:
  previous = [s for s in _finished_steps(manager.directory) if s != step]
  kept = f"the checkpoint of step {previous[-1]} is untouched" if previous else "no earlier checkpoint exists"
  return CheckpointError(
    f"Saving the checkpoint of step {step} to {manager.directory} failed ({_one_line(error)}); {kept}. Free disk "
    "space (or fix the cause above) and restart the same command: it resumes from the last checkpoint."
  )


def process_position(data: dict, index: int, count: int, step: int) -> dict:
  """Process `index`'s data position in a checkpoint's data item (older checkpoints held one position).

  A run with more processes than wrote the checkpoint stops here with a clear message; one with fewer is refused by
  the data iterator, whose position names its reader block.
  """
  if "processes" not in data:
    return data
  if index >= len(data["processes"]):
    raise ValueError(
      f"Checkpoint step {step} was written by {len(data['processes'])} process(es); this run has {count}. "
      "Resume with the same number of processes (the data order depends on it)."
    )
  return data["processes"][index]


def _on_every_process(flag: bool) -> bool:
  """True when `flag` holds on every process (a collective), so that all processes restore the same step."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).all())


def _set_aside(manager: ocp.CheckpointManager, steps: list[int], aside: str) -> None:
  """Moves the step directories `steps` (orbax's default names: the step number) of `manager` into `aside`."""
  if jax.process_index() == 0:
    os.makedirs(aside, exist_ok=True)
    for step in steps:
      target = os.path.join(aside, str(step))
      if os.path.exists(target):  # set aside before, e.g. by an earlier fallback
        target += time.strftime(".%Y%m%d-%H%M%S")
      os.replace(manager.directory / str(step), target)
      logging.info("Moved the unreadable checkpoint of step %d to %s.", step, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("checkpointing:set_aside")
  manager.reload()


def _save_args(state: Any, data_state: dict) -> ocp.args.Composite:
  return ocp.args.Composite(
    state=ocp.args.StandardSave(state), data=ocp.args.JsonSave({"processes": gather_process_states(data_state)})
  )


def gather_process_states(state: dict) -> list[dict]:
  """Every process's JSON-serialisable `state`, in process order (a collective: all processes call it).

  Orbax writes JSON items from the primary process only, so the per-process data positions are gathered first.
  """
  if jax.process_count() == 1:
    return [state]
  from jax.experimental import multihost_utils

  blob = np.frombuffer(json.dumps(state).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.int32(blob.size))).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[: blob.size] = blob
  blobs = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
  return [json.loads(bytes(b[:n]).decode()) for b, n in zip(blobs, sizes)]


def load_tower(workdir: str, key: str) -> tuple[dict, dict]:
  """(params, batch_stats) subtrees named `key` (e.g. "backbone") of the newest readable checkpoint of the run in
  `workdir`; batch_stats is {} when the tower has none. FileNotFoundError without a checkpoint, CheckpointError when
  none reads, ValueError without the subtree."""
  checkpointer = Checkpointer(workdir, async_save=False)
  try:
    if checkpointer.latest_step() is None:
      raise FileNotFoundError(f"No checkpoint in {workdir!r} to load the tower {key!r} from.")
    state, _, _ = checkpointer.restore_latest(None)  # no target: the arrays as saved
  finally:
    checkpointer.close()
  if key not in state["params"]:
    raise ValueError(f"The checkpoint in {workdir!r} has no params[{key!r}]; it has {sorted(state['params'])}.")
  stats = (state.get("model_state") or {}).get("batch_stats", {}).get(key, {})
  return state["params"][key], stats


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for sharded restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

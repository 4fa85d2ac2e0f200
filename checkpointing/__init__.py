"""Orbax checkpoints of the train state plus the data iterator position: the last K, and optionally the best one.

Orbax writes each step into a temporary directory and renames it only when complete, so a run killed mid-save leaves
no checkpoint that `latest_step()` would pick up.
"""

from __future__ import annotations

import json
import logging
import os
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
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
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
    """Saves `state` and this process's `data_state` (every process must call it: saving is collective)."""
    self.manager.save(step, args=_save_args(state, data_state), force=force)

  def save_best(self, step: int, state: Any, data_state: dict, results: dict) -> None:
    """Offers the state evaluated as `results` to the best-checkpoint slot (kept when its metric is the best)."""
    if self.best_manager is None or step in self.best_manager.all_steps():
      return
    if self.best_metric not in results:
      raise KeyError(f"best_metric {self.best_metric!r} is not among the evaluation results {sorted(results)}.")
    self.best_manager.save(
      step, args=_save_args(state, data_state), metrics={self.best_metric: float(results[self.best_metric])}, force=True
    )

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
    data = restored["data"]
    # Checkpoints hold every process's position; older ones held one position.
    return restored["state"], data["processes"][jax.process_index()] if "processes" in data else data

  def wait(self) -> None:
    for manager in (self.manager, self.best_manager):
      if manager is not None:
        manager.wait_until_finished()

  def close(self) -> None:
    for manager in (self.manager, self.best_manager):
      if manager is not None:
        manager.wait_until_finished()
        manager.close()


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
  """(params, batch_stats) subtrees named `key` (e.g. "backbone") of the latest checkpoint of the run in `workdir`;
  batch_stats is {} when the tower has none. FileNotFoundError without a checkpoint, ValueError without the subtree."""
  checkpointer = Checkpointer(workdir, async_save=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {workdir!r} to load the tower {key!r} from.")
    state = checkpointer.manager.restore(step)["state"]
  finally:
    checkpointer.close()
  if key not in state["params"]:
    raise ValueError(f"The checkpoint in {workdir!r} has no params[{key!r}]; it has {sorted(state['params'])}.")
  stats = (state.get("model_state") or {}).get("batch_stats", {}).get(key, {})
  return state["params"][key], stats


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for sharded restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

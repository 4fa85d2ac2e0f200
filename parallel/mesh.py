"""The one global device mesh of a run and the shardings derived from it."""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Batch dimensions are split over every mesh axis that holds data: plain data parallelism uses `data`, FSDP also splits
# the batch over `fsdp` (each fsdp shard sees different examples, as in big_vision/MaxText).
BATCH_AXES = ("data", "fsdp")


def build_mesh(mesh_config=None, devices: list | None = None) -> Mesh:
  """Builds a ("data", "fsdp") mesh; a -1 size takes all remaining devices.

  mesh_config: mapping with optional `data` and `fsdp` sizes (defaults: data=-1, fsdp=1).
  """
  devices = list(devices if devices is not None else jax.devices())
  cfg = dict(mesh_config or {})
  sizes = {"data": int(cfg.get("data", -1)), "fsdp": int(cfg.get("fsdp", 1))}
  unknown = [k for k in sizes if sizes[k] == -1]
  if len(unknown) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {sizes}.")
  known = math.prod(v for v in sizes.values() if v != -1)
  if unknown:
    if len(devices) % known:
      raise ValueError(f"Mesh sizes {sizes} do not divide the {len(devices)} devices.")
    sizes[unknown[0]] = len(devices) // known
  if math.prod(sizes.values()) != len(devices):
    raise ValueError(f"Mesh {sizes} needs {math.prod(sizes.values())} devices but {len(devices)} are available.")
  return jax.make_mesh(
    tuple(sizes.values()), tuple(sizes), axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices
  )


def batch_spec(mesh: Mesh) -> P:
  """PartitionSpec of a batch's leading dimension: split over all data-holding axes."""
  return P(tuple(a for a in BATCH_AXES if a in mesh.axis_names))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, batch_spec(mesh))


def batch_axis_name(mesh: Mesh) -> tuple[str, ...]:
  """The axis names a loss's collectives run over (all axes the batch is split on)."""
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def num_batch_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in batch_axis_name(mesh)]))


def check_batch_size(global_batch_size: int, mesh: Mesh, accum_steps: int = 1) -> None:
  """Fails at start-up, naming the numbers, when the batch (or its micro-batches) does not split over the devices."""
  shards = num_batch_shards(mesh)
  if global_batch_size % shards:
    raise ValueError(
      f"batch_size={global_batch_size} is not divisible by the number of data shards ({shards} devices on "
      f"mesh axes {batch_axis_name(mesh)}); choose a multiple of {shards}."
    )
  if accum_steps < 1 or global_batch_size % (accum_steps * shards):
    raise ValueError(
      f"batch_size={global_batch_size} does not split into grad_accum_steps={accum_steps} micro-batches "
      f"of a multiple of the {shards} data shards; choose a multiple of {max(accum_steps, 1) * shards}."
    )

"""Joining a multi-process (multi-host) run: one JAX process per host, all devices in one global mesh."""

from __future__ import annotations

import logging
import os

import jax


def initialize(
  coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
  """Calls `jax.distributed.initialize` when a multi-process run is asked for; returns whether it was.

  Arguments fall back to the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); when some are
  given and others not, JAX fills the rest from the cluster (SLURM, Open MPI, Cloud TPU). Must run before anything
  touches the devices.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  if coordinator_address is None and num_processes is None and process_id is None:
    return False
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
  logging.info(
    "Process %d of %d; %d local and %d global devices.",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True

"""train/distributed.py: with no flags, jax.distributed.initialize() runs exactly when the environment says this
process is one of several (SLURM srun, Open MPI, Cloud TPU on GKE or multislice); faked variables, faked initialize."""

import jax
import pytest

from train import distributed

_VARIABLES = (
  *distributed._SLURM_STEP,
  *distributed._TPU_HOSTS,
  "OMPI_MCA_orte_hnp_uri",
  "OMPI_COMM_WORLD_SIZE",
  "MEGASCALE_COORDINATOR_ADDRESS",
  "JAX_COORDINATOR_ADDRESS",
  "JAX_NUM_PROCESSES",
  "JAX_PROCESS_ID",
)
_SRUN = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="node[1-2]", SLURM_PROCID="1", SLURM_LOCALID="0")


@pytest.mark.parametrize(
  "env, expected_call",
  [
    ({}, None),
    ({**_SRUN, "SLURM_NTASKS": "4"}, (None, None, None)),
    ({**_SRUN, "SLURM_NTASKS": "1"}, None),  # one task: a single process
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, None),  # the batch script, not an srun task
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:4000", "OMPI_COMM_WORLD_SIZE": "2"}, (None, None, None)),
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:4000", "OMPI_COMM_WORLD_SIZE": "1"}, None),
    ({"TPU_WORKER_HOSTNAMES": "tpu-0,tpu-1"}, (None, None, None)),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2:8080"}, (None, None, None)),
    ({"JAX_COORDINATOR_ADDRESS": "h0:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, ("h0:1234", 2, 1)),
  ],
)
def test_initialize_joins_a_cluster_only_when_the_environment_shows_one(monkeypatch, env, expected_call):
  for name in _VARIABLES:
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(tuple(kwargs.values())))
  assert distributed.initialize() == (expected_call is not None)
  assert calls == ([] if expected_call is None else [expected_call])


def test_explicit_arguments_win_over_the_environment(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h0:1234")
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  assert distributed.initialize("h9:99", num_processes=4, process_id=3)
  assert calls == [dict(coordinator_address="h9:99", num_processes=4, process_id=3)]


@pytest.mark.parametrize(
  "requested, batch_size, cores, expected",
  [(0, 128, 2, 0), (3, 128, 2, 3), (-1, 128, 2, 2), (-1, 128, 16, 16), (-1, 96, 16, 16), (-1, 100, 16, 10)],
)
def test_cpu_device_count_is_the_most_devices_up_to_the_cores_that_divide_the_batch(
  requested, batch_size, cores, expected
):
  assert distributed.cpu_device_count(requested, batch_size, cores) == expected


def test_configure_cpu_devices_splits_the_host_before_jax_starts_unless_xla_flags_force_a_count():
  import os
  import subprocess
  import sys

  code = (
    "from train import distributed; import jax, os; n = distributed.configure_cpu_devices(2, 64); "
    "print(n, jax.device_count(), os.environ.get('XLA_FLAGS', ''))"
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = lambda env: subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
  count, devices, flags = run(env).stdout.split(" ", 2)
  assert (count, devices) == ("2", "2")
  assert "--xla_cpu_multi_thread_eigen=false" in flags
  # The tests' (or a user's) forced device count wins: nothing is changed.
  out = run({**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=3"}).stdout.split()
  assert out[:2] == ["0", "3"]

"""Two local JAX processes (jax.distributed on CPU, 2 devices each) train together through the real loop and end with
the parameters one process on 4 devices reaches from the same global batches; the checkpoint holds both processes'
data positions."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

import checkpointing as ckpt_lib
from parallel import mesh as mesh_lib
from test_scale import vit_config
from train import setup
from train import step as step_lib
from train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
DEVICES_PER_PROCESS = 2


def multihost_config():
  """test_scale's tiny SimCLR with a one-block ViT: process 1 compiles anew every run (JAX caches compilations of
  process 0 only)."""
  c = vit_config(total_steps=STEPS, checkpoint_every=100)
  c.model.depth = 1
  return c


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one_process_on_the_same_global_batches(tmp_path):
  port = _free_port()
  env = dict(
    os.environ,
    PYTHONPATH=REPO,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
    JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
  )
  workdir = tmp_path / "run"
  procs = [
    subprocess.Popen(
      [sys.executable, __file__, str(i), str(port), str(workdir), str(tmp_path / f"rows{i}.npz")],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  try:
    logs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)

  # Process p fed rows [16 p, 16 p + 16) of each global batch of 32.
  local = [np.load(tmp_path / f"rows{i}.npz") for i in range(2)]
  config = multihost_config()
  mesh = mesh_lib.build_mesh(config.mesh, jax.devices()[: 2 * DEVICES_PER_PROCESS])
  batches = [
    {
      k: jax.device_put(np.concatenate([local[0][f"{s}/{k}"], local[1][f"{s}/{k}"]]), mesh_lib.batch_sharding(mesh))
      for k in ("image", "label")
    }
    for s in range(STEPS)
  ]
  run = setup.build(config, devices=jax.devices()[: 2 * DEVICES_PER_PROCESS])
  run.data.close()
  state, shardings = run.state, run.shardings
  step = step_lib.make_train_step(
    run.method, run.tx, shardings, run.learning_rate, **step_lib.train_step_options(config)
  )
  for batch in batches:
    state, _ = step(state, batch)

  checkpointer = ckpt_lib.Checkpointer(str(workdir), async_save=False)
  assert checkpointer.latest_step() == STEPS
  saved, _ = checkpointer.restore(ckpt_lib.abstract_with_shardings(state, shardings))
  positions = checkpointer.manager.restore(STEPS, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  checkpointer.close()
  # float32, sums over at most the 2 x 32 rows of a batch in another order: n * eps relative, twice that.
  tol = 2 * 64 * np.finfo(np.float32).eps
  want = jax.device_get(state.params)
  scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(want))
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)
  jax.tree.map(close, jax.device_get(saved.params), want)
  assert [p["process_block"] for p in positions["processes"]] == [[0, 2], [1, 2]]


def _worker(process_id: int, port: int, workdir: str, batches_path: str) -> None:
  """One of two processes: trains multihost_config() through train_and_evaluate and saves the rows it fed."""
  from train import distributed

  assert distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
  from input_pipeline.iterator import BatchIterator

  next_batch, fed = BatchIterator.__next__, {}

  def recording_next(self):
    batch = next_batch(self)
    for key in ("image", "label"):
      shards = sorted(batch[key].addressable_shards, key=lambda s: s.index[0].start)
      fed[f"{len(fed) // 2}/{key}"] = np.concatenate([np.asarray(s.data) for s in shards])
    return batch

  BatchIterator.__next__ = recording_next
  assert trainer.train_and_evaluate(multihost_config(), workdir, progress=False, stop_at=STEPS) == {
    "stopped_at_step": STEPS
  }
  np.savez(batches_path, **{k: v for k, v in fed.items() if int(k.split("/")[0]) < STEPS})
  jax.distributed.shutdown()


if __name__ == "__main__":
  _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])

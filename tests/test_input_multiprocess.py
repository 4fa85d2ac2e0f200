"""Two local JAX processes (jax.distributed on CPU) read disjoint shards whose union is the dataset."""

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES, GLOBAL_BATCH = 64, 16


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _digest(image: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _worker(process_id: int, port: int, out_path: str) -> None:
  """One process: 2 CPU devices, one epoch of its rows of every global batch, written as image digests."""
  import jax

  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
  import input_pipeline
  from configs import default

  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  config = default.data()
  config.train_size = NUM_EXAMPLES
  it = input_pipeline.build(
    config,
    split="train",
    global_batch_size=GLOBAL_BATCH,
    repeat=False,
    seed=0,
    sharding=jax.sharding.NamedSharding(mesh, jax.P("data")),
  )
  digests, shapes = [], set()
  for batch in it:
    shapes.add(batch["image"].shape)
    for shard in sorted(batch["image"].addressable_shards, key=lambda s: s.index[0].start):
      digests += [_digest(x) for x in np.asarray(shard.data)]
  with open(out_path, "w") as f:
    json.dump({"digests": digests, "shapes": sorted(shapes), "devices": jax.device_count()}, f)
  jax.distributed.shutdown()


def test_two_processes_read_disjoint_shards_covering_the_dataset(tmp_path):
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=ROOT)
  outs = [tmp_path / f"p{i}.json" for i in range(2)]
  procs = [
    subprocess.Popen(
      [sys.executable, __file__, str(i), str(port), str(outs[i])],
      env=env,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )
    for i in range(2)
  ]
  try:
    logs = [p.communicate(timeout=60)[0].decode(errors="replace") for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]
  results = [json.loads(o.read_text()) for o in outs]
  assert all(r["devices"] == 4 and r["shapes"] == [[GLOBAL_BATCH, 32, 32, 3]] for r in results)
  first, second = (set(r["digests"]) for r in results)
  assert len(first) == len(second) == NUM_EXAMPLES // 2 and not first & second

  from input_pipeline import shapes

  images, _, _ = shapes.render(0, "train", np.arange(NUM_EXAMPLES))
  assert first | second == {_digest(x) for x in images}


if __name__ == "__main__":
  _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])

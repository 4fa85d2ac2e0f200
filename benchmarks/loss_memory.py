"""Per-device memory and step time of the CLIP / SigLIP losses: dense vs chunked vs ring.

Runs value_and_grad of each loss inside shard_map on 8 fake CPU devices (embedding dim
512) and prints one JSON line per (loss, mode, global batch): XLA's compiled memory
analysis per device (temp = the loss's working memory; arguments and outputs are the
local embeddings and their gradients) and, where feasible on a small CPU, the time per
step. Memory needs only compilation, so the largest batch (1,048,576 = SigLIP's largest)
costs seconds. Beside the measured figures, each row gives the sizes that bound it:
`local_rows` n = N / devices, `local_embedding_mib` (one local [n, D] float32 array: an
embedding or its gradient accumulator), `logit_block_mib` (one float32 block of logits,
[n, chunk] streamed, [n, N] dense) and `gathered_embeddings_mib` (both [N, D] embeddings,
which only the dense mode gathers: chunked all-gathers chunk / devices rows of every
device per step, ring passes chunk rows around). A last line per loss compares chunked /
ring to dense at the largest batch.

  python benchmarks/loss_memory.py [--batches 4096,16384,65536,1048576] [--time_up_to 4096]
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import losses  # noqa: E402

MIB = 2**20


def build_step(loss: str, mode: str, chunk_size: int, mesh):
  """jit(value_and_grad) of the sharded loss w.r.t. both embeddings, scale (and bias)."""
  if loss == "clip":
    fn = lambda x, y, t: losses.clip_softmax_loss(x, y, t, mode=mode, chunk_size=chunk_size, axis_name="data")
    scalars = 1
  else:
    fn = lambda x, y, t, b: losses.siglip_loss(x, y, t, b, mode=mode, chunk_size=chunk_size, axis_name="data")
    scalars = 2
  sharded = jax.shard_map(fn, mesh=mesh, in_specs=(P("data"), P("data")) + (P(),) * scalars, out_specs=P())
  return jax.jit(jax.value_and_grad(sharded, argnums=tuple(range(2 + scalars)))), scalars


def measure(loss, mode, global_batch, dim, chunk_size, mesh, timed, repeats):
  step, scalars = build_step(loss, mode, chunk_size, mesh)
  emb = jax.ShapeDtypeStruct((global_batch, dim), jnp.float32, sharding=NamedSharding(mesh, P("data")))
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  t0 = time.perf_counter()
  compiled = step.lower(emb, emb, *(scalar,) * scalars).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  local_rows = global_batch // mesh.size
  block_columns = {"dense": global_batch, "chunked": max(1, chunk_size // mesh.size) * mesh.size}.get(mode, chunk_size)
  row = {
    "loss": loss,
    "mode": mode,
    "global_batch": global_batch,
    "devices": mesh.size,
    "dim": dim,
    "chunk_size": None if mode == "dense" else chunk_size,
    "temp_mib": round(mem.temp_size_in_bytes / MIB, 2),
    "argument_mib": round(mem.argument_size_in_bytes / MIB, 2),
    "output_mib": round(mem.output_size_in_bytes / MIB, 2),
    "peak_mib": round(
      (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes) / MIB,
      2,
    ),
    "local_rows": local_rows,
    "local_embedding_mib": round(local_rows * dim * 4 / MIB, 2),
    "logit_block_mib": round(local_rows * min(block_columns, global_batch) * 4 / MIB, 2),
    "gathered_embeddings_mib": round(2 * global_batch * dim * 4 / MIB, 2) if mode == "dense" else 0.0,
    "compile_s": round(compile_s, 2),
    "step_s": None,
  }
  if timed:
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.device_put(losses.l2_normalize(jax.random.normal(k1, (global_batch, dim))), emb.sharding)
    y = jax.device_put(losses.l2_normalize(jax.random.normal(k2, (global_batch, dim))), emb.sharding)
    args = (x, y, jnp.float32(10.0), jnp.float32(-10.0))[: 2 + scalars]
    jax.block_until_ready(compiled(*args))
    t0 = time.perf_counter()
    for _ in range(repeats):
      out = compiled(*args)
    jax.block_until_ready(out)
    row["step_s"] = round((time.perf_counter() - t0) / repeats, 3)
    row["loss_value"] = float(out[0])
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="4096,16384,65536,1048576", help="global batch sizes")
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--chunk_size", type=int, default=256)
  parser.add_argument("--time_up_to", type=int, default=4096, help="time steps only up to this global batch")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--losses", default="clip,siglip")
  args = parser.parse_args()
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  batches = [int(b) for b in args.batches.split(",")]
  for loss in args.losses.split(","):
    largest = {}
    for global_batch in batches:
      for mode in ("dense", "chunked", "ring"):
        row = measure(
          loss,
          mode,
          global_batch,
          args.dim,
          args.chunk_size,
          mesh,
          timed=global_batch <= args.time_up_to,
          repeats=args.repeats,
        )
        print(json.dumps(row), flush=True)
        if global_batch == max(batches):
          largest[mode] = row["temp_mib"]
          largest[f"{mode}_peak"] = row["peak_mib"]
    print(
      json.dumps(
        {
          "loss": loss,
          "summary": "temp memory per device relative to dense",
          "global_batch": max(batches),
          "chunked_over_dense": round(largest["chunked"] / largest["dense"], 4),
          "ring_over_dense": round(largest["ring"] / largest["dense"], 4),
          "ring_temp_under_1_gib": largest["ring"] <= 1024,
          "peak_mib": {mode: largest[f"{mode}_peak"] for mode in ("dense", "chunked", "ring")},
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  main()

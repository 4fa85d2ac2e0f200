"""Per-device memory and step time of one SimCLR train step under data-parallel vs FSDP sharding; prints one JSON line.

    .venv/bin/python benchmarks/scaling.py [--devices 8] [--width 256 --depth 4] [--batch_size 64] [--steps 3]

--devices N (default 8) runs on N fake CPU devices; --devices 0 uses the real devices. Variants:
- data: mesh data=N, parameters and optimizer state replicated;
- fsdp: mesh fsdp=N, large arrays split over the devices (partition.DEFAULT_RULES), batch split likewise;
- fsdp_remat: fsdp + recomputation of each transformer block in the backward pass;
- fsdp_accum4: fsdp + cached-embedding gradient accumulation over 4 micro-batches.
Per variant: state_bytes (parameters + AdamW moments held by one device, from the shardings), XLA's compiled
memory analysis of the step (argument / output / temp bytes per device, total = argument + output - aliased +
temp), FLOPs per device, and the median wall time of `--steps` steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  parser.add_argument("--devices", type=int, default=8, help="fake CPU devices; 0 = the real devices")
  parser.add_argument("--width", type=int, default=256)
  parser.add_argument("--depth", type=int, default=4)
  parser.add_argument("--patch_size", type=int, default=8)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--variants", default="data,fsdp,fsdp_remat,fsdp_accum4")
  return parser.parse_args()


ARGS = _parse()
if ARGS.devices:  # before jax is imported
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
  ).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402

import input_pipeline  # noqa: E402
import methods  # noqa: E402
from configs import simclr_shapes  # noqa: E402
from parallel import mesh as mesh_lib  # noqa: E402
from train import optim  # noqa: E402
from parallel import partition  # noqa: E402
from train import perf  # noqa: E402
from train import step as step_lib  # noqa: E402

VARIANTS = {
  "data": dict(mesh=dict(data=-1, fsdp=1)),
  "fsdp": dict(mesh=dict(data=1, fsdp=-1)),
  "fsdp_remat": dict(mesh=dict(data=1, fsdp=-1), remat=True),
  "fsdp_accum4": dict(mesh=dict(data=1, fsdp=-1), grad_accum_steps=4),
}


def variant_config(name: str) -> ml_collections.ConfigDict:
  """SimCLR on shapes with a BatchNorm-free ViT encoder and AdamW, sharded as the variant says."""
  variant = VARIANTS[name]
  c = simclr_shapes.get_config()
  c.batch_size = ARGS.batch_size
  c.model = ml_collections.ConfigDict(
    dict(
      name="vit",
      patch_size=ARGS.patch_size,
      width=ARGS.width,
      depth=ARGS.depth,
      num_heads=max(1, ARGS.width // 64),
      remat=variant.get("remat", False),
      dtype="float32",
    )
  )
  c.head = ml_collections.ConfigDict(dict(hidden_dim=ARGS.width * 4, out_dim=128, num_layers=2, use_bn=False))
  c.optimizer.name = "adamw"
  c.mesh = ml_collections.ConfigDict(variant["mesh"])
  c.grad_accum_steps = variant.get("grad_accum_steps", 1)
  return c


def measure(name: str) -> dict:
  config = variant_config(name)
  mesh = mesh_lib.build_mesh(config.mesh)
  mesh_lib.check_batch_size(config.batch_size, mesh, config.grad_accum_steps)
  batch = next(
    input_pipeline.build(
      config.data,
      split="train",
      global_batch_size=config.batch_size,
      sharding=mesh_lib.batch_sharding(mesh),
      seed=config.seed,
    )
  )
  method = methods.get(config.method)(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, config.total_steps, config.batch_size)
  shapes, shardings = step_lib.abstract_train_state(config, method, tx, mesh, batch)
  state, _ = step_lib.create_train_state(config, method, tx, mesh, batch)
  step = step_lib.make_train_step(method, tx, shardings, lr, **step_lib.train_step_options(config))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(ARGS.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  stats = perf.compiled_stats(compiled)
  mib = lambda b: round(b / 2**20, 2)
  return {
    "mesh": dict(mesh.shape),
    "params": int(sum(x.size for x in jax.tree.leaves(shapes.params))),
    "state_mib_per_device": mib(partition.bytes_per_device(shapes, shardings)),
    "params_mib_per_device": mib(partition.bytes_per_device(shapes.params, shardings.params)),
    **{f"compiled_{k.replace('_bytes', '_mib')}": mib(v) for k, v in stats.items() if k.endswith("_bytes")},
    "gflops_per_device": round(stats.get("flops_per_device", 0.0) / 1e9, 2),
    "compile_s": round(compile_s, 1),
    "step_time_s": round(statistics.median(times), 3),
    "loss": round(float(jax.device_get(metrics["loss"])), 4),
  }


def main() -> None:
  out = {
    "benchmark": "scaling",
    "devices": jax.device_count(),
    "device_kind": jax.devices()[0].device_kind,
    "host_cpus": os.cpu_count(),
    "model": f"vit width={ARGS.width} depth={ARGS.depth} patch={ARGS.patch_size}",
    "image_size": 32,
    "batch_size": ARGS.batch_size,
    "optimizer": "adamw",
    "results": {},
  }
  for name in ARGS.variants.split(","):
    out["results"][name] = measure(name)
  print(json.dumps(out))


if __name__ == "__main__":
  main()

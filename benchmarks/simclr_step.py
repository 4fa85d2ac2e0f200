"""SimCLR training-step throughput on the host CPU, the workload of ../shared/peers/bench_simclr_torch.py; prints one JSON
line (images/s and peak RSS).

    BATCH=256 STEPS=3 THREADS=2 .venv/bin/python benchmarks/simclr_step.py

Workload: ResNet-18 with the CIFAR stem ("resnet18_cifar"), projection MLP 512-2048-128 ("projection_head"), NT-Xent at
temperature 0.5, BATCH examples -> 2 x BATCH random 32x32 views (no augmentation: this times the model step), SGD with
momentum 0.9. The step is the trainer's own (`train.step.make_train_step`: donated state, non-finite guard,
metrics) around the SimCLR method's encoder and loss stages.

Environment: BATCH (256), STEPS (3 timed steps after one warm-up), THREADS (cores to run on, default all),
CONV ("winograd" default, "blocked", "xla" or "auto": the ResNet's conv lowering, models.conv), ACCUM (micro-batches per step; >1 = the
trainer's cached (GradCache) accumulation: full-batch negatives and gradient, BatchNorm statistics per micro-batch),
DEVICES (host devices the batch is split over, default 1), MALLOC ("default" or "tuned", see `tune_malloc`),
SCHEDULER ("memory", default: XLA:CPU's concurrency-optimised scheduler off, see CPU_SCHEDULER_FLAG; "concurrency"). A
faster allocator is a process setting: run_peers.py --preload gives one to both ours and the peer.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import time

# glibc's malloc tuning must happen before JAX starts its threads, and the host device count before JAX initialises.
_MALLOPT = {"M_TRIM_THRESHOLD": -1, "M_TOP_PAD": -2, "M_MMAP_MAX": -4, "M_ARENA_MAX": -8}


def tune_malloc() -> bool:
  """Makes glibc keep and reuse freed memory instead of returning it to the kernel; True when applied.

  XLA:CPU allocates each step's temporaries (hundreds of MB for a ResNet step) from its worker threads. By default
  glibc serves such blocks with fresh mmap()s and unmaps them on free, so every step page-faults (and the kernel
  zeroes) all of its working memory again: measured here as the largest single cost of a naive JAX CPU step. One
  arena, no mmap and no trimming keep that memory mapped between steps, but fragment: peak RSS grew by up to 2x
  over a few steps, so it is off by default (an allocator such as tcmalloc does better). No-op off glibc.
  """
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  settings = {"M_ARENA_MAX": 1, "M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1, "M_TOP_PAD": 64 << 20}
  return all(libc.mallopt(_MALLOPT[name], value) == 1 for name, value in settings.items())


# XLA:CPU's concurrency-optimised scheduler starts independent work early: in the ResNet-18 step it allocated the
# backward loops' output buffers during the forward pass, beside every saved activation (compiled temporaries 4.9 GB
# vs 3.8 GB with XLA's other scheduler, 512 images; benchmarks/README.md). XLA reads it from XLA_FLAGS only (a
# per-compile option is ignored), so it is a process setting.
CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def configure_host(threads: int, devices: int, malloc: str, scheduler: str = "memory") -> dict:
  """Process-wide settings of a CPU benchmark, applied before JAX initialises; returns them for the JSON record.

  scheduler: "memory" turns XLA:CPU's concurrency-optimised scheduler off (unless XLA_FLAGS already sets it),
  "concurrency" leaves XLA's default.
  """
  if threads < os.cpu_count():
    os.sched_setaffinity(0, range(threads))  # XLA:CPU sizes its thread pools by the cores it may run on
  flags = os.environ.get("XLA_FLAGS", "")
  if devices > 1:
    flags += f" --xla_force_host_platform_device_count={devices}"
  if scheduler == "memory" and CPU_SCHEDULER_FLAG not in flags:
    flags += f" {CPU_SCHEDULER_FLAG}=false"
  os.environ["XLA_FLAGS"] = flags.strip()
  tuned = malloc == "tuned" and tune_malloc()
  return {
    "threads": threads,
    "host_devices": devices,
    "malloc": "tuned" if tuned else "default",
    "preload": os.environ.get("LD_PRELOAD", ""),
    "scheduler": scheduler,
    "xla_flags": os.environ.get("XLA_FLAGS", "").strip(),
  }


def configure_host_from_env() -> dict:
  """`configure_host` from the environment: THREADS (default all cores), DEVICES (1), MALLOC ("default"),
  SCHEDULER ("memory")."""
  return configure_host(
    env_int("THREADS", os.cpu_count()),
    env_int("DEVICES", 1),
    os.environ.get("MALLOC", "default"),
    os.environ.get("SCHEDULER", "memory"),
  )


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_train_steps(step, state, data, steps: int) -> tuple[list[float], int]:
  """(seconds of each of `steps` train steps after one warm-up step, parameter count): the step compiled ahead (and
  the memory compiling freed handed back, as the trainer does), the state donated and threaded through, each step
  blocked on until its loss is ready."""
  import jax

  from train import perf

  compiled = step.lower(state, data).compile()
  perf.release_freed_host_memory()
  holder = [state]
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    holder[0], metrics = compiled(holder[0], data)
    jax.block_until_ready(metrics["loss"])
    if i:
      times.append(time.perf_counter() - start)
  return times, int(sum(x.size for x in jax.tree.leaves(holder[0].params)))


def step_record(workload: str, batch: int, times: list[float], params: int, flops: float, host: dict, **fields) -> dict:
  """The JSON record of a train-step benchmark: the best of the step `times` and all of them, the parameter count,
  peak RSS, FLOP utilisation of the best step and the `configure_host` settings; `fields` (throughput, the
  workload's settings) after the best step time."""
  import jax

  best = min(times)
  return dict(
    workload=workload,
    framework=f"jax {jax.__version__}",
    batch=batch,
    step_s=best,
    **fields,
    step_s_all=[round(t, 3) for t in times],
    params=params,
    peak_rss_mb=peak_rss_mb(),
    **utilisation(flops, best),
    **host,
  )


def env_int(name: str, default: int) -> int:
  return int(os.environ.get(name, default))


def simclr_config(batch: int, *, conv: str = "winograd", accum: int = 1, tiny: bool = False):
  """The benchmark's SimCLR config: the shapes recipe with the peer's model, head, loss and optimizer.

  `tiny` shrinks the model for the smoke test.
  """
  from configs import simclr_shapes

  c = simclr_shapes.get_config()
  c.batch_size = batch
  model = dict(name="resnet18_cifar") if not tiny else dict(name="resnet", stage_sizes=(1, 1), width=8, stem="cifar")
  c.model = dict(model, dtype="float32", remat=False)
  if conv != "xla":
    c.model.conv_impl = conv
  c.head = dict(hidden_dim=2048, out_dim=128, num_layers=2) if not tiny else dict(hidden_dim=32, out_dim=16)
  c.loss.temperature = 0.5
  c.optimizer.update(
    dict(name="sgd", base_lr=0.06, momentum=0.9, weight_decay=5e-4, warmup_steps=0, schedule="constant")
  )
  c.grad_accum_steps, c.grad_accum_mode = accum, "cached"
  c.mesh = dict(data=-1, fsdp=1)
  return c


def _method_and_optimizer(config):
  """(mesh, method, tx, learning rate): the SimCLR method whose augmentation stage is replaced by given views."""
  import dataclasses

  import methods
  from methods.base import compose_loss
  from parallel import mesh as mesh_lib
  from train import optim

  mesh = mesh_lib.build_mesh(config.mesh)
  mesh_lib.check_batch_size(config.batch_size, mesh, config.grad_accum_steps)
  simclr = methods.get("simclr")(config, mesh)
  given_views = lambda batch, rng: batch["views"]
  method = dataclasses.replace(
    simclr, prepare_fn=given_views, loss_fn=compose_loss(given_views, simclr.encode_fn, simclr.embedding_loss_fn)
  )
  tx, lr = optim.make_optimizer(config.optimizer, 1000, config.batch_size)
  return mesh, method, tx, lr


def _train_step(config, method, tx, shardings, lr):
  from train import step as step_lib

  return step_lib.make_train_step(
    method, tx, shardings, lr, accum_steps=config.grad_accum_steps, accum_mode=config.grad_accum_mode
  )


def build_step(config, views):
  """(step, state, data) for random `views` [B, 2, 32, 32, 3]: the trainer's jitted step on the SimCLR method, whose
  augmentation stage is replaced by the given views (as the peer's random tensors)."""
  import jax
  from parallel import mesh as mesh_lib
  from train import step as step_lib

  mesh, method, tx, lr = _method_and_optimizer(config)
  state, shardings = step_lib.create_train_state(config, method, tx, mesh, {"image": views[:, 0]})
  step = _train_step(config, method, tx, shardings, lr)
  return step, state, jax.device_put({"views": views}, mesh_lib.batch_sharding(mesh))


def model_flops(config, views) -> float:
  """FLOPs of one step's math (all devices): XLA's cost analysis of the lowered step with XLA's own convolutions and
  no accumulation, from shapes only (nothing compiled or allocated).

  XLA counts a loop body once, so the blocked convolutions' loops (models/conv.py) and the micro-batch scan would be
  undercounted in the step that runs; the math is the same in every lowering, so this count is the work done.
  """
  import copy

  import jax
  from parallel import mesh as mesh_lib
  from train import step as step_lib

  config = copy.deepcopy(config)
  config.model.conv_impl, config.grad_accum_steps = "xla", 1
  mesh, method, tx, lr = _method_and_optimizer(config)
  shapes, shardings = step_lib.abstract_train_state(config, method, tx, mesh, {"image": views[:, 0]})
  state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
  data = {"views": jax.ShapeDtypeStruct(views.shape, views.dtype, sharding=mesh_lib.batch_sharding(mesh))}
  return lowered_flops(_train_step(config, method, tx, shardings, lr), state, data)


def lowered_flops(step, state, data) -> float:
  """FLOPs of `step(state, data)` over all devices, from XLA's cost analysis of the lowered (not yet partitioned or
  compiled) computation: a multiply-add counts 2."""
  cost = step.lower(state, data).cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def utilisation(flops_per_step: float, step_s: float) -> dict:
  """Achieved FLOP/s of a step against this CPU's float32 peak (train.perf.cpu_peak), for the JSON record."""
  from train import perf

  achieved = flops_per_step / step_s
  peak = perf.cpu_peak()
  return {
    "flops_per_step": flops_per_step,
    "achieved_gflops_per_s": round(achieved / 1e9, 2),
    "cpu_peak_gflops_per_s": round(peak["peak_flops"] / 1e9, 1) if peak else None,
    "fraction_of_peak": round(achieved / peak["peak_flops"], 4) if peak else None,
    "peak_derivation": peak["derivation"] if peak else "unknown CPU",
  }


def main() -> None:
  batch, steps = env_int("BATCH", 256), env_int("STEPS", 3)
  host = configure_host_from_env()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import numpy as np

  conv, accum = os.environ.get("CONV", "winograd"), env_int("ACCUM", 1)
  config = simclr_config(batch, conv=conv, accum=accum)
  views = np.random.default_rng(0).standard_normal((batch, 2, 32, 32, 3), dtype=np.float32)
  step, state, data = build_step(config, views)
  flops = model_flops(config, views)
  times, params = time_train_steps(step, state, data, steps)
  throughput = dict(images_per_step=2 * batch, images_per_s=2 * batch / min(times))
  record = step_record("simclr_resnet18_cifar", batch, times, params, flops, host, **throughput, conv=conv, accum=accum)
  print(json.dumps(record))


if __name__ == "__main__":
  main()

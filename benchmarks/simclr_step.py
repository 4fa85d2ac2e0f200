"""SimCLR training-step throughput on the host CPU, the workload of ../shared/peers/bench_simclr_torch.py; prints one JSON
line (images/s and peak RSS).

    BATCH=256 STEPS=3 THREADS=2 .venv/bin/python benchmarks/simclr_step.py

Workload: ResNet-18 with the CIFAR stem ("resnet18_cifar"), projection MLP 512-2048-128 ("projection_head"), NT-Xent at
temperature 0.5, BATCH examples -> 2 x BATCH random 32x32 views (no augmentation: this times the model step), SGD with
momentum 0.9. The step is the trainer's own (`train.step.make_train_step`: donated state, non-finite guard,
metrics) around the SimCLR method's encoder and loss stages.

Environment: BATCH (256), STEPS (3 timed steps after one warm-up), THREADS (cores to run on, default all),
CONV ("blocked", "xla" or "auto": the ResNet's conv lowering, models.conv), ACCUM (micro-batches per step; >1 = the
trainer's cached (GradCache) accumulation: full-batch negatives and gradient, BatchNorm statistics per micro-batch),
DEVICES (host devices the batch is split over, default 1), MALLOC ("default" or "tuned", see `tune_malloc`). A faster
allocator is a process setting: run_peers.py --preload gives one to both ours and the peer.
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


def configure_host(threads: int, devices: int, malloc: str) -> dict:
  """Process-wide settings of a CPU benchmark, applied before JAX initialises; returns them for the JSON record."""
  if threads < os.cpu_count():
    os.sched_setaffinity(0, range(threads))  # XLA:CPU sizes its thread pools by the cores it may run on
  if devices > 1:
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  tuned = malloc == "tuned" and tune_malloc()
  return {
    "threads": threads,
    "host_devices": devices,
    "malloc": "tuned" if tuned else "default",
    "xla_flags": os.environ.get("XLA_FLAGS", "").strip(),
  }


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_train_steps(step, state, data, steps: int) -> tuple[list[float], int]:
  """(seconds of each of `steps` train steps after one warm-up step, parameter count); the state is donated and
  threaded through, each step blocked on until its loss is ready."""
  import jax

  holder = [state]
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    holder[0], metrics = step(holder[0], data)
    jax.block_until_ready(metrics["loss"])
    if i:
      times.append(time.perf_counter() - start)
  return times, int(sum(x.size for x in jax.tree.leaves(holder[0].params)))


def env_int(name: str, default: int) -> int:
  return int(os.environ.get(name, default))


def simclr_config(batch: int, *, conv: str = "blocked", accum: int = 1, tiny: bool = False):
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


def build_step(config, views):
  """(step, state) for random `views` [B, 2, 32, 32, 3]: the trainer's jitted step on the SimCLR method, whose
  augmentation stage is replaced by the given views (as the peer's random tensors)."""
  import dataclasses

  import jax
  import methods
  from methods.base import compose_loss
  from parallel import mesh as mesh_lib
  from train import optim
  from train import step as step_lib

  mesh = mesh_lib.build_mesh(config.mesh)
  mesh_lib.check_batch_size(config.batch_size, mesh, config.grad_accum_steps)
  simclr = methods.get("simclr")(config, mesh)
  given_views = lambda batch, rng: batch["views"]
  method = dataclasses.replace(
    simclr, prepare_fn=given_views, loss_fn=compose_loss(given_views, simclr.encode_fn, simclr.embedding_loss_fn)
  )
  tx, lr = optim.make_optimizer(config.optimizer, 1000, config.batch_size)
  state, shardings = step_lib.create_train_state(config, method, tx, mesh, {"image": views[:, 0]})
  step = step_lib.make_train_step(
    method, tx, shardings, lr, accum_steps=config.grad_accum_steps, accum_mode=config.grad_accum_mode
  )
  return step, state, jax.device_put({"views": views}, mesh_lib.batch_sharding(mesh))


def main() -> None:
  batch, steps = env_int("BATCH", 256), env_int("STEPS", 3)
  host = configure_host(env_int("THREADS", os.cpu_count()), env_int("DEVICES", 1), os.environ.get("MALLOC", "default"))
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax
  import numpy as np

  conv, accum = os.environ.get("CONV", "blocked"), env_int("ACCUM", 1)
  config = simclr_config(batch, conv=conv, accum=accum)
  views = np.random.default_rng(0).standard_normal((batch, 2, 32, 32, 3), dtype=np.float32)
  step, state, data = build_step(config, views)
  times, params = time_train_steps(step, state, data, steps)
  best = min(times)
  print(
    json.dumps(
      dict(
        workload="simclr_resnet18_cifar",
        framework=f"jax {jax.__version__}",
        batch=batch,
        images_per_step=2 * batch,
        step_s=best,
        images_per_s=2 * batch / best,
        step_s_all=[round(t, 3) for t in times],
        conv=conv,
        accum=accum,
        params=params,
        peak_rss_mb=peak_rss_mb(),
        **host,
      )
    )
  )


if __name__ == "__main__":
  main()

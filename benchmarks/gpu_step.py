"""Our training steps at GPU size, one JSON line per workload: ViT-B/16 CLIP in bfloat16 at the largest batch that
fits (chunked loss) and SimCLR ResNet-50 on 224 px views; images/s, MFU and peak device memory. benchmarks/gpu.sh
runs it on a GPU machine; `GPU_BENCH_SIZE=tiny` shrinks every model for a CPU smoke test.

    python benchmarks/gpu_step.py [simclr] [clip]

CLIP: ViT-B/16 image tower (224 px, class-token pooling), CLIP's text transformer (context 77, vocab 49408, width
512, 12 layers, 8 heads, causal), both projected to 512, `clip_softmax_loss` in chunked mode (chunk 1024), AdamW,
model.dtype bfloat16 (float32 parameters and optimizer). The batch is the largest multiple of 256 whose compiled step
(XLA's memory analysis: arguments + outputs - donated + temporaries) fits in 90% of the device's memory (three
compilations, `largest_batch`); CLIP_BATCH sets it instead. SimCLR: ResNet-50 (ImageNet stem, XLA's convolutions off CPU), projection MLP 2048-2048-128, NT-Xent
0.1, SGD, SIMCLR_BATCH (256) examples = 2 x 256 views of 224 px, bfloat16 compute.

Reported: step time (median of STEPS timed steps after one warm-up), images or pairs per second, model FLOPs per
step (XLA's cost analysis of the lowered step, see simclr_step.model_flops), MFU against train.perf's peak for the
device, peak device memory (`memory_stats`, GPU only) and the compiled memory. Imports of TensorFlow, tfds, grain and
clu fail inside this script (as on GPU machines, which have none of them), so a module-level import of one shows up.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# GPU machines have none of these: the record says whether anything imported one (it must not).
ABSENT_ON_GPU = ("tensorflow", "tensorflow_datasets", "grain", "clu")

from benchmarks import clip_step, simclr_step  # noqa: E402

TINY = os.environ.get("GPU_BENCH_SIZE", "") == "tiny"
MIB = 2**20


def clip_config(batch: int):
  """ViT-B/16 CLIP in bfloat16 with the chunked loss (tiny: a 16 px, one-layer version)."""
  from configs import clip_shapes

  c = clip_shapes.get_config()
  c.batch_size = batch
  if TINY:
    c.data.image_size = 16
    c.model.image = dict(name="vit", patch_size=8, width=16, depth=1, num_heads=2, pool="cls")
    text = dict(vocab_size=100, context_length=8, width=16, depth=1, num_heads=2)
    c.model.embed_dim, chunk = 16, 8
  else:
    c.data.image_size = 224
    c.model.image = dict(name="vit_b16", pool="cls")
    text = dict(vocab_size=49408, context_length=77, width=512, depth=12, num_heads=8)
    c.model.embed_dim, chunk = 512, 1024
  c.model.text = dict(name="text_transformer", causal=True, **text)
  c.model.dtype = "bfloat16"
  c.loss.update(dict(mode="chunked", chunk_size=chunk))
  c.optimizer.update(dict(name="adamw", base_lr=1e-4, weight_decay=0.1, warmup_steps=0, schedule="constant"))
  return c


def simclr_config(batch: int):
  """SimCLR with ResNet-50 on ImageNet-size views in bfloat16 (tiny: the smallest ResNet, 16 px)."""
  c = simclr_step.simclr_config(batch, conv="xla" if TINY else "auto", tiny=TINY)  # tiny: the faster compile
  if not TINY:
    c.model = dict(name="resnet50", conv_impl="auto", dtype="bfloat16", remat=False)
    c.head = dict(hidden_dim=2048, out_dim=128, num_layers=2)
  c.model.dtype = "bfloat16"
  c.loss.temperature = 0.1
  return c


def compiled_bytes(compiled) -> dict:
  m = compiled.memory_analysis()
  total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  return {"total": total, "temp": m.temp_size_in_bytes, "arguments": m.argument_size_in_bytes}


def device_limit_bytes() -> int | None:
  """Memory of one device: GPU_MEMORY_LIMIT_MB when set (tests), else the allocator's limit (None on CPU)."""
  import jax

  if os.environ.get("GPU_MEMORY_LIMIT_MB"):
    return int(float(os.environ["GPU_MEMORY_LIMIT_MB"]) * MIB)
  return (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")


def abstract_clip(batch: int):
  """(jitted step, abstract state, abstract batch) of the CLIP step at `batch`: shapes only, nothing allocated."""
  import jax
  import jax.numpy as jnp

  import methods
  from parallel import mesh as mesh_lib
  from train import optim
  from train import step as step_lib

  config = clip_config(batch)
  size, text = config.data.image_size, config.model.text
  mesh = mesh_lib.build_mesh(config.mesh)
  sharding = mesh_lib.batch_sharding(mesh)
  data = {
    "image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32, sharding=sharding),
    "caption": jax.ShapeDtypeStruct((batch, text.context_length), jnp.int32, sharding=sharding),
  }
  method = methods.get("clip")(config, mesh)
  tx, lr = optim.make_optimizer(config.optimizer, 1000, batch)
  shapes, shardings = step_lib.abstract_train_state(config, method, tx, mesh, data)
  state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
  return step_lib.make_train_step(method, tx, shardings, lr), state, data


def largest_batch(compile_fn, limit: int, granule: int, cap: int):
  """(batch, its compiled step, the sizes tried): the largest multiple of `granule` (<= cap) whose compiled step
  `compile_fn(batch)` fits in 90% of `limit` bytes (arguments + outputs - donated + temporaries).

  Probes at `granule` and 2 x `granule` give the bytes as a line in the batch; its estimate is compiled and stepped
  down by `granule` while it does not fit.
  """
  tried = []

  def total(batch):
    compiled = compile_fn(batch)
    tried.append({"batch": batch, "compiled_mib": round(compiled_bytes(compiled)["total"] / MIB)})
    return compiled_bytes(compiled)["total"], compiled

  (small, compiled), (large, _) = total(granule), total(2 * granule)
  per_example = max(large - small, 1) / granule
  batch = int(min(cap, (0.9 * limit - (small - per_example * granule)) // per_example // granule * granule))
  while batch > granule:
    size, candidate = total(batch)
    if size <= 0.9 * limit:
      return batch, candidate, tried
    batch -= granule
  return granule, compiled, tried


def compile_clip(batch: int):
  """The compiled CLIP step at `batch`, from shapes only."""
  step, state, data = abstract_clip(batch)
  return step.lower(state, data).compile()


def time_steps(step, state, data, steps: int) -> list[float]:
  """Seconds of each of `steps` steps after one warm-up (the state donated and threaded through)."""
  import jax

  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    state, metrics = step(state, data)
    jax.block_until_ready(metrics["loss"])
    if i:
      times.append(time.perf_counter() - start)
  return times


def record(workload: str, batch: int, examples: int, times: list[float], flops: float, compiled) -> dict:
  """The JSON line of one workload."""
  import jax

  from train import perf

  step_s = statistics.median(times)
  peak = perf.peak_flops_per_device()
  stats = jax.local_devices()[0].memory_stats() or {}
  return {
    "workload": workload,
    "device": jax.local_devices()[0].device_kind,
    "devices": jax.device_count(),
    "framework": f"jax {jax.__version__}",
    "batch": batch,
    "step_s": round(step_s, 4),
    "step_s_all": [round(t, 4) for t in times],
    "examples_per_s": round(examples / step_s, 1),
    "model_flops_per_step": flops,
    "mfu": round(flops / step_s / (peak * jax.device_count()), 4) if peak else None,
    "peak_device_memory_mib": round(stats["peak_bytes_in_use"] / MIB) if "peak_bytes_in_use" in stats else None,
    "compiled_memory_mib": round(compiled_bytes(compiled)["total"] / MIB),
    "absent_on_gpu_imported": sorted({m.split(".")[0] for m in sys.modules} & set(ABSENT_ON_GPU)),
  }


def run_clip(steps: int) -> dict:
  batch, tried = int(os.environ.get("CLIP_BATCH", 0)), []
  if batch:
    compiled = compile_clip(batch)
  else:
    limit = device_limit_bytes()
    if limit is None:
      raise SystemExit("No device memory limit known (CPU): set CLIP_BATCH or GPU_MEMORY_LIMIT_MB.")
    batch, compiled, tried = largest_batch(compile_clip, limit, 8 if TINY else 256, 64 if TINY else 65536)
  step, state, data = clip_step.build_step(clip_config(batch))
  flops = clip_step.lowered_flops(step, state, data)
  times = time_steps(compiled, state, data, steps)
  return {**record("clip_vit_b16_bf16", batch, batch, times, flops, compiled), "loss_mode": "chunked", "tried": tried}


def run_simclr(steps: int) -> dict:
  import numpy as np

  batch = int(os.environ.get("SIMCLR_BATCH", 8 if TINY else 256))
  size = 16 if TINY else 224
  config = simclr_config(batch)
  views = np.random.default_rng(0).standard_normal((batch, 2, size, size, 3), dtype=np.float32)
  step, state, data = simclr_step.build_step(config, views)
  compiled = step.lower(state, data).compile()
  flops = simclr_step.model_flops(config, views)
  times = time_steps(compiled, state, data, steps)
  return record("simclr_resnet50_224_bf16", batch, 2 * batch, times, flops, compiled)


def main() -> None:
  steps = int(os.environ.get("STEPS", 2 if TINY else 10))
  # One process for both: SimCLR first, so that its peak device memory is its own (the counter never resets).
  for workload in sys.argv[1:] or ["simclr", "clip"]:
    print(json.dumps({"clip": run_clip, "simclr": run_simclr}[workload](steps)), flush=True)


if __name__ == "__main__":
  main()

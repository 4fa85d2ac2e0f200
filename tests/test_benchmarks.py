"""benchmarks/: each script's workload builds and runs one tiny step (no timing assertions)."""

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks import clip_step, run_peers, simclr_cifar10_quality, simclr_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_simclr_step_workload_runs_a_step():
  # nn.Conv here: the tests' 8-device mesh would put collectives inside the blocked convolution's loops (see
  # models/conv.py), which are measured and tested on one device.
  config = simclr_step.simclr_config(16, conv="xla", tiny=True)
  views = np.random.default_rng(0).standard_normal((16, 2, 8, 8, 3), dtype=np.float32)
  step, state, batch = simclr_step.build_step(config, views)
  state, metrics = step(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_clip_step_workload_runs_a_step():
  step, state, batch = clip_step.build_step(clip_step.clip_config(8, tiny=True))
  state, metrics = step(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_quality_training_stops_at_the_budget_and_knn_scores_the_features():
  config = simclr_cifar10_quality.quality_config(8, "", tiny=True)
  images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(32) % 10
  method, state, stats = simclr_cifar10_quality.train_for(config, images, budget_s=0.0)
  assert stats["steps"] == 0 and stats["compile_s"] > 0
  top1 = simclr_cifar10_quality.knn_top1(
    method, state, (images[:24], labels[:24]), (images[24:], labels[24:]), batch_size=8
  )
  assert 0.0 <= top1 <= 1.0


def test_quality_script_skips_cleanly_without_the_data():
  env = {**os.environ, "DATA": "/nonexistent/cifar10.npz"}
  out = subprocess.run(
    [sys.executable, os.path.join(ROOT, "benchmarks", "simclr_cifar10_quality.py")],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  ).stdout
  assert "skipped" in json.loads(out.strip().splitlines()[-1])


def test_runner_reads_the_last_json_line_and_records_the_load():
  record = run_peers.run_json(
    [sys.executable, "-c", "print('log line'); print('{\"images_per_s\": 2.5}')"], dict(os.environ), ROOT, timeout=60
  )
  assert record["images_per_s"] == 2.5 and "load_avg_1m_before" in record


def test_ring_loss_at_a_million_pairs_needs_under_1_gib_per_device():
  """SigLIP's largest batch (2^20) on 8 devices: compiled (not run) value and gradients of the CLIP ring loss."""
  import jax
  from jax.sharding import AxisType

  from benchmarks import loss_memory

  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  row = loss_memory.measure("clip", "ring", 2**20, 512, 256, mesh, timed=False, repeats=0)
  assert row["temp_mib"] <= 1024 and row["gathered_embeddings_mib"] == 0.0


def test_machine_line_has_the_measured_matrix_product_rate():
  rate = run_peers.measured_gemm(threads=1)
  assert rate is not None and rate > 0.5  # GFLOP/s of XLA's float32 2048 x 2048 product on one core


ZEN4_CPUINFO = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\ncpu MHz\t\t: 2600.000\nsiblings\t: 4\n"
ZEN4_CPUINFO += "cpu cores\t: 2\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16\n\nprocessor\t: 1\n"


def test_cpu_peak_counts_fma_pipes_lanes_and_clock_from_cpuinfo():
  from train import perf

  zen4 = perf.cpu_peak(ZEN4_CPUINFO, cores=2)  # AVX-512 on 256-bit pipes: 2 x 8 lanes x 2 FLOPs per cycle
  assert zen4["peak_flops"] == 2 * 32 * 2.6e9 and "avx512f" in zen4["derivation"]
  zen5 = perf.cpu_peak(ZEN4_CPUINFO.replace(": 25", ": 26"), cores=2)  # full 512-bit pipes
  assert zen5["peak_flops"] == 2 * 64 * 2.6e9
  zen3 = perf.cpu_peak(ZEN4_CPUINFO.replace(" avx512f avx512_bf16", ""), cores=1, clock_hz=3e9)
  assert zen3["peak_flops"] == 32 * 3e9
  assert perf.cpu_peak("processor\t: 0\n") is None


def test_gpu_batch_search_takes_the_largest_batch_that_fits():
  from types import SimpleNamespace

  from benchmarks import gpu_step

  class Compiled:  # 100 bytes of state (donated) + 50 fixed and 10 per example of temporaries
    def __init__(self, batch):
      self.batch = batch

    def memory_analysis(self):
      temp = 50 + 10 * self.batch
      return SimpleNamespace(
        argument_size_in_bytes=100, output_size_in_bytes=100, alias_size_in_bytes=100, temp_size_in_bytes=temp
      )

  batch, compiled, tried = gpu_step.largest_batch(Compiled, limit=1000, granule=8, cap=1024)
  assert batch == compiled.batch == 72  # 100 + 50 + 10 b <= 900
  assert [t["batch"] for t in tried] == [8, 16, 72]
  assert gpu_step.largest_batch(Compiled, limit=1000, granule=8, cap=40)[0] == 40


def test_gpu_script_runs_end_to_end_on_cpu_at_tiny_sizes(tmp_path):
  """benchmarks/gpu.sh with GPU_BENCH_SIZE=tiny on one CPU device: every workload prints its line (the torch peer
  skips without torch / timm) and nothing imports TensorFlow."""
  env = dict(os.environ)
  # One device, as one GPU; the suite's other XLA flags (conftest.py) stay.
  env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "")
  cache = os.path.join(os.environ.get("TMPDIR", "/tmp"), "jax_cache_contrastive")  # the suite's, see conftest.py
  env.update(
    GPU_BENCH_SIZE="tiny",
    CLIP_BATCH="16",  # the batch search is tested above; here it would cost two more compilations
    OUT=str(tmp_path),
    PYTHON=sys.executable,
    JAX_DEFAULT_PRNG_IMPL="rbg",  # XLA:CPU compiles threefry initialisers slowly
    JAX_COMPILATION_CACHE_DIR=cache,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
  )
  subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu.sh")], env=env, timeout=600, check=True)
  rows = {r["workload"]: r for r in map(json.loads, open(tmp_path / "gpu_results.jsonl"))}
  clip, simclr = rows["clip_vit_b16_bf16"], rows["simclr_resnet50_224_bf16"]
  assert clip["batch"] == 16 and clip["examples_per_s"] > 0 and clip["mfu"] > 0 and clip["loss_mode"] == "chunked"
  assert simclr["examples_per_s"] > 0 and simclr["model_flops_per_step"] > 0
  assert clip["absent_on_gpu_imported"] == simclr["absent_on_gpu_imported"] == []  # no TensorFlow, tfds, grain, clu
  torch_row = rows["clip_vit_b16_bf16_torch"]
  assert "skipped" in torch_row or torch_row["batch"] == 16

"""Performance accounting of a run: FLOPs and memory of the compiled step, MFU, device memory, profiler traces."""

from __future__ import annotations

import ctypes
import logging
import os
import re
from typing import Any

import jax

# Dense bf16 peak FLOP/s of one JAX device, by a substring of its lower-cased `device_kind` (first match wins).
# MFU is reported against these; set config.peak_tflops for other devices (e.g. 756 for an H100 PCIe).
PEAK_TFLOPS = (
  ("h100", 989.0),
  ("h200", 989.0),
  ("b200", 2250.0),
  ("a100", 312.0),
  ("tpu v6 lite", 918.0),
  ("tpu v6e", 918.0),
  ("tpu v5 lite", 197.0),
  ("tpu v5e", 197.0),
  ("tpu v5p", 459.0),
  ("tpu v5", 459.0),
  ("tpu v4", 275.0),
)


def compiled_stats(compiled) -> dict[str, float]:
  """FLOPs per device of one call and its memory (bytes per device) from XLA's cost and memory analyses.

  `compiled` is a `jax.stages.Compiled`; keys a backend does not report are left out. XLA counts the body of a loop
  once, so the FLOPs of a step with gradient accumulation (a lax.scan over micro-batches) are undercounted.
  """
  stats = {}
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else None
  if cost and "flops" in cost:
    stats["flops_per_device"] = float(cost["flops"])
  memory = compiled.memory_analysis()
  if memory is not None:
    for name in ("argument", "output", "alias", "temp", "generated_code"):
      stats[f"{name}_bytes"] = float(getattr(memory, f"{name}_size_in_bytes"))
    # Donated arguments alias outputs: the step holds arguments + outputs - aliased + temporaries at its peak.
    stats["total_bytes"] = stats["argument_bytes"] + stats["output_bytes"] - stats["alias_bytes"] + stats["temp_bytes"]
  return stats


def _fma_datapath_bits(vendor: str, family: int, model: int, isa_bits: int) -> int:
  """Width of each FMA pipe: AMD Zen / Zen+ 128 bits, Zen 2 / 3 / 4 256 bits (Zen 4 runs AVX-512 as two halves),
  Zen 5 512 bits; other x86 cores as wide as their widest vector ISA."""
  if vendor == "AuthenticAMD":
    if family == 0x17:
      return 128 if model < 0x30 else 256
    if family == 0x19:
      return 256
  return isa_bits


def cpu_peak(cpuinfo: str | None = None, cores: int | None = None, clock_hz: float | None = None) -> dict | None:
  """Peak float32 FLOP/s of the cores this process may run on, and how it was derived; None off x86 Linux.

  peak = physical cores x FMA pipes (2) x float32 lanes per pipe x 2 FLOPs per FMA x clock. Lanes: the widest vector
  ISA in /proc/cpuinfo's flags (avx512f: 16, avx2 + fma: 8, else 4), capped by the pipe's datapath for the vendor
  and family (`_fma_datapath_bits`); cores: CPUs in the affinity mask / threads per core (siblings / cpu cores); clock:
  cpufreq's cpuinfo_max_freq when the kernel exposes it, else "cpu MHz" (under a hypervisor: the nominal clock, so
  turbo can exceed this peak). Every x86 server core since Haswell / Zen has two FMA pipes (a few Xeon Silver /
  Bronze parts have one 512-bit pipe: there the peak is 2x too high).
  """
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      return None
  fields = dict(re.findall(r"^([^:\n]+?)\s*:\s*(.*)$", cpuinfo.split("\n\n")[0], re.M))
  flags = set(fields.get("flags", "").split())
  if not flags or "cpu family" not in fields:
    return None
  isa, isa_bits = (
    ("avx512f", 512) if "avx512f" in flags else ("avx2+fma", 256) if {"avx2", "fma"} <= flags else ("sse", 128)
  )
  vendor, family, model = fields.get("vendor_id", ""), int(fields["cpu family"]), int(fields.get("model", 0))
  datapath = min(isa_bits, _fma_datapath_bits(vendor, family, model, isa_bits))
  threads_per_core = max(1, int(fields.get("siblings", 1)) // max(1, int(fields.get("cpu cores", 1))))
  cores = cores or max(1, len(os.sched_getaffinity(0)) // threads_per_core)
  clock_source = "cpu MHz"
  if clock_hz is None:
    try:
      with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
        clock_hz, clock_source = float(f.read()) * 1e3, "cpufreq max"
    except (OSError, ValueError):
      clock_hz = float(fields.get("cpu MHz", 0)) * 1e6
  flops_per_cycle = 2 * 2 * datapath // 32  # 2 FMA pipes x lanes x (multiply + add)
  return {
    "peak_flops": cores * flops_per_cycle * clock_hz,
    "derivation": f"{cores} cores x {flops_per_cycle} fp32 FLOP/cycle (2 FMA pipes x {datapath // 32} lanes x 2; "
    f"{isa}, {vendor} family {family:#x} model {model:#x}) x {clock_hz / 1e9:.2f} GHz ({clock_source})",
  }


def peak_flops_per_device(override_tflops: float = 0.0, device: Any = None) -> float | None:
  """Peak FLOP/s of one device: `override_tflops` * 1e12 when set, else from PEAK_TFLOPS; a CPU device gets its
  share of the host's float32 peak (`cpu_peak`: host devices split the same cores); None when unknown."""
  if override_tflops:
    return float(override_tflops) * 1e12
  device = device or jax.local_devices()[0]
  if device.platform == "cpu":
    host = cpu_peak()
    return host["peak_flops"] / jax.local_device_count() if host else None
  kind = device.device_kind.lower()
  for key, tflops in PEAK_TFLOPS:
    if key in kind:
      return tflops * 1e12
  return None


def mfu(flops_per_device: float | None, step_time_s: float, peak_flops: float | None) -> float | None:
  """Model FLOPs utilisation: achieved FLOP/s of one device over its peak (XLA's count, so remat FLOPs included)."""
  if not flops_per_device or not peak_flops or step_time_s <= 0:
    return None
  return flops_per_device / step_time_s / peak_flops


def release_freed_host_memory() -> bool:
  """Hands the memory that the C allocator keeps in its free lists back to the kernel; True if done.

  Compiling a train step frees hundreds of MB (XLA's and LLVM's working memory) that the allocator keeps mapped, and
  the step's own buffers then come on top: a ResNet-18 SimCLR step (512 images) peaked at 3.74 GB RSS without a trim
  after compiling and at 3.37 GB with one. glibc: malloc_trim; gperftools' tcmalloc preloaded in glibc's place (the
  faster allocator benchmarks/run_peers.py tries): its MallocExtension_ReleaseFreeMemory (the CLIP benchmark step
  under tcmalloc, two host devices: peak RSS 2.79-2.82 -> 2.52-2.53 GB). A no-op elsewhere.
  """
  released = False
  try:
    release = getattr(ctypes.CDLL(None), "MallocExtension_ReleaseFreeMemory", None)  # every loaded library's symbols
  except OSError:
    release = None
  if release is not None:
    release.restype = None
    release()
    released = True
  try:
    released = bool(ctypes.CDLL("libc.so.6").malloc_trim(0)) or released
  except (OSError, AttributeError):
    pass
  return released


def device_memory() -> dict[str, float]:
  """Bytes in use and peak bytes of the first local device, where the backend reports them (GPU/TPU, not CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return {k: float(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in stats}


class ProfileWindow:
  """Writes a jax.profiler trace of steps first..last (inclusive) into `directory` (TensorBoard's profile plugin or
  Perfetto read it)."""

  def __init__(self, steps, directory: str):
    steps = tuple(int(s) for s in (steps or ()))
    if steps and (len(steps) != 2 or steps[0] > steps[1]):
      raise ValueError(f"profile_steps must be (first, last) with first <= last, got {steps}.")
    self.first, self.last = steps if steps else (None, None)
    self.directory = directory
    self.active = False

  def before_step(self, step: int) -> None:
    if step == self.first:
      os.makedirs(self.directory, exist_ok=True)
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after_step(self, step: int, outputs: Any) -> None:
    if self.active and step >= self.last:
      jax.block_until_ready(outputs)
      self.stop()

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      logging.info("Wrote a profile of steps %s-%s to %s", self.first, self.last, self.directory)

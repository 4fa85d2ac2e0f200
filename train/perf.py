"""Performance accounting of a run: FLOPs and memory of the compiled step, MFU, device memory, profiler traces."""

from __future__ import annotations

import logging
import os
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


def peak_flops_per_device(override_tflops: float = 0.0, device: Any = None) -> float | None:
  """Peak FLOP/s of one device: `override_tflops` * 1e12 when set, else from PEAK_TFLOPS; None when unknown (CPU)."""
  if override_tflops:
    return float(override_tflops) * 1e12
  kind = (device or jax.local_devices()[0]).device_kind.lower()
  for key, tflops in PEAK_TFLOPS:
    if key in kind:
      return tflops * 1e12
  return None


def mfu(flops_per_device: float | None, step_time_s: float, peak_flops: float | None) -> float | None:
  """Model FLOPs utilisation: achieved FLOP/s of one device over its peak (XLA's count, so remat FLOPs included)."""
  if not flops_per_device or not peak_flops or step_time_s <= 0:
    return None
  return flops_per_device / step_time_s / peak_flops


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

"""Runs our benchmarks and the torch peers back to back, in one invocation, and prints one JSON line with the ratios.

    .venv/bin/python benchmarks/run_peers.py --best --workloads simclr clip --repeats 3    # best against best
    .venv/bin/python benchmarks/run_peers.py --workloads simclr clip --repeats 2
    .venv/bin/python benchmarks/run_peers.py --workloads simclr --env CONV=xla --env BATCH=64
    .venv/bin/python benchmarks/run_peers.py --workloads simclr --variant DEVICES=1 --variant DEVICES=2

Each repeat runs ours and the peer as separate subprocesses, one after the other, with the same THREADS and the same
environment variables (--env), rotating which goes first; the peer runs in its own venv (benchmarks/setup_peers.sh).
Each --variant is one more configuration of ours (its variables on top of --env), run in every repeat beside the
peer, so variants are compared under the same load. ratio = our throughput / the peer's of the same repeat; the
machine's 1-minute load average is recorded before every run, since on a shared machine the spread between repeats is
part of the result.

--best compares each side at its fastest setting that a user reaches with one documented switch. Process settings of
both sides: the allocator (glibc's malloc, or tcmalloc / jemalloc through LD_PRELOAD where installed) and THREADS (all
cores). Ours also has DEVICES (host devices the batch is split over) and CONV (the ResNet's convolution lowering).
First, one selection run of ours per allocator and combination of its switches (STEPS=1) picks our fastest
configuration under each allocator; then, in every repeat, ours (that configuration) and the peer run under every
allocator, in rotating order. Printed: the same-settings ratio per allocator (both sides under that allocator) and the
best-vs-best ratio (our fastest run of the repeat over the peer's fastest run of the repeat).

The machine line has the CPU's float32 peak derived from its clock (train.perf.cpu_peak) and, measured, the rate of
XLA's 2048 x 2048 float32 matrix product on THREADS cores; each run's fraction of both is printed (the step's FLOPs are
those of the direct algorithm, so a step that does fewer multiplies, as Winograd convolutions do, can exceed 1).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "..", "shared", "peers")
# workload -> (our script, peer script, throughput key of both JSON lines)
WORKLOADS = {
  "simclr": ("benchmarks/simclr_step.py", "bench_simclr_torch.py", "images_per_s"),
  "clip": ("benchmarks/clip_step.py", "bench_openclip.py", "pairs_per_s"),
}
# The peers' own malloc tuning equivalent of simclr_step.tune_malloc, for --peer_malloc tuned.
TUNED_MALLOC_ENV = {
  "MALLOC_ARENA_MAX": "1",
  "MALLOC_MMAP_MAX_": "0",
  "MALLOC_TRIM_THRESHOLD_": str(2**62),
  "MALLOC_TOP_PAD_": str(64 << 20),
}
# Allocators --best tries under both sides (the first path that exists); Debian / Ubuntu packages
# libtcmalloc-minimal4 and libjemalloc2. glibc is always tried.
ALLOCATORS = {
  "tcmalloc": (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
  ),
  "jemalloc": ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"),
}


def our_switches(workload: str, cores: int) -> dict[str, list[str]]:
  """Our own switches --best searches, each a documented environment variable of our benchmark script."""
  devices = [str(d) for d in sorted({1, 2, cores}) if d <= cores]
  switches = {"DEVICES": devices}
  if workload == "simclr":
    switches["CONV"] = ["winograd", "blocked"]  # "xla" never won (0.5x blocked)
  return switches


def available_allocators() -> dict[str, str]:
  """name -> LD_PRELOAD value of every allocator installed here ("" = glibc's malloc)."""
  found = {"glibc": ""}
  for name, paths in ALLOCATORS.items():
    path = next((p for p in paths if os.path.exists(p)), None)
    if path:
      found[name] = path
  return found


def run_json(cmd: list[str], env: dict, cwd: str, timeout: float) -> dict:
  """Runs `cmd` and returns its last stdout line parsed as JSON, with the load average before and the wall time."""
  load = os.getloadavg()[0]
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
  return {
    **json.loads(lines[-1]),
    "load_avg_1m_before": round(load, 2),
    "wall_s": round(time.perf_counter() - start, 1),
  }


def summary(values: list[float]) -> dict:
  return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


# XLA's float32 matrix product on this host's cores (one device, THREADS threads): the rate the step's matrix
# products can reach here, measured, beside the peak derived from the clock the hypervisor reports.
GEMM_PROBE = """
import json, time
import jax, jax.numpy as jnp, numpy as np
n = 2048
a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
product = jax.jit(lambda a: a @ a)
product(a).block_until_ready()
best = float("inf")
for _ in range(10):
  start = time.perf_counter()
  product(a).block_until_ready()
  best = min(best, time.perf_counter() - start)
print(json.dumps({"gemm_gflops_per_s": round(2 * n**3 / best / 1e9, 1)}))
"""


def measured_gemm(threads: int) -> float | None:
  """GFLOP/s of XLA's 2048 x 2048 float32 matrix product on `threads` cores (best of 10), None if it fails."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true"}
  try:
    cmd = [sys.executable, "-c", GEMM_PROBE]
    if threads < os.cpu_count():
      cmd = ["taskset", "-c", f"0-{threads - 1}", *cmd]
    return run_json(cmd, env, ROOT, 300)["gemm_gflops_per_s"]
  except (RuntimeError, subprocess.SubprocessError, OSError):
    return None


def machine(threads: int | None = None) -> dict:
  """The CPU the figures belong to: model, ISA, cores, its float32 peak (train.perf.cpu_peak) and the measured rate
  of XLA's matrix product on `threads` cores."""
  sys.path.insert(0, ROOT)
  from train import perf

  fields = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f.read().split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
  except OSError:
    pass
  flags = set(fields.get("flags", "").split())
  peak = perf.cpu_peak()
  return {
    "cpu": f"{fields.get('model name', platform.processor())} (family {fields.get('cpu family')} model "
    f"{fields.get('model')})",
    "isa": "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other",
    "cores": os.cpu_count(),
    "cpu_peak_gflops_per_s": round(peak["peak_flops"] / 1e9, 1) if peak else None,
    "peak_derivation": peak["derivation"] if peak else None,
    "measured_gemm_gflops_per_s": measured_gemm(threads or os.cpu_count()),
  }


class Runner:
  """Runs ours or the peer for one workload with given variables and allocator."""

  def __init__(self, args, base_env: dict):
    self.args, self.base_env = args, base_env

  def __call__(self, workload: str, who: str, variables: dict, preload: str = "") -> dict:
    ours_script, peer_script, _ = WORKLOADS[workload]
    env = {**self.base_env, **variables, **({"LD_PRELOAD": preload} if preload else {})}
    if who == "peer":
      cmd = [self.args.peer_python, os.path.join(self.args.peers_dir, peer_script)]
      env = {**env, **(TUNED_MALLOC_ENV if self.args.peer_malloc == "tuned" else {})}
      return run_json(cmd, env, self.args.peers_dir, self.args.timeout)
    return run_json([sys.executable, os.path.join(ROOT, ours_script)], env, ROOT, self.args.timeout)


def compare_variants(run: Runner, workload: str, variants: dict, repeats: int, preload: str) -> dict:
  """The peer and every variant of ours in each repeat, rotating the order; ratios per variant."""
  key = WORKLOADS[workload][2]
  runs = [("peer", {})] + list(variants.items())
  records = {who: [] for who, _ in runs}
  for repeat in range(repeats):
    shift = repeat % len(runs)
    for who, variables in runs[shift:] + runs[:shift]:
      records[who].append(run(workload, "peer" if who == "peer" else "ours", variables, preload))
  theirs = records.pop("peer")
  out = {
    f"peer_{key}": [round(t[key], 2) for t in theirs],
    "peer_peak_rss_mb": [round(t["peak_rss_mb"]) for t in theirs],
    "peer": theirs,
  }
  for label, ours in records.items():
    ratios = [o[key] / t[key] for o, t in zip(ours, theirs)]
    out[label or "ours"] = {
      "ratio_ours_over_peer": summary(ratios),
      "ratios": [round(r, 3) for r in ratios],
      f"ours_{key}": [round(o[key], 2) for o in ours],
      "ours_peak_rss_mb": [round(o["peak_rss_mb"]) for o in ours],
      "load_avg_1m": [[o["load_avg_1m_before"], t["load_avg_1m_before"]] for o, t in zip(ours, theirs)],
      "runs": ours,
    }
  return out


def select_ours(run: Runner, workload: str, allocators: dict, select_steps: int) -> dict:
  """Per allocator, our fastest combination of switches (one run each, STEPS=select_steps)."""
  key = WORKLOADS[workload][2]
  switches = our_switches(workload, os.cpu_count())
  chosen, trials = {}, []
  for alloc, preload in allocators.items():
    best = None
    for values in itertools.product(*switches.values()):
      variables = dict(zip(switches, values))
      record = run(workload, "ours", {**variables, "STEPS": str(select_steps)}, preload)
      trials.append({"allocator": alloc, **variables, key: round(record[key], 2), "load": record["load_avg_1m_before"]})
      if best is None or record[key] > best[1]:
        best = (variables, record[key])
    chosen[alloc] = best[0]
  return {"chosen": chosen, "trials": trials}


def best_against_best(
  run: Runner, workload: str, allocators: dict, repeats: int, select_steps: int, gemm: float | None = None
) -> dict:
  """Selection, then `repeats` rounds of ours (its choice) and the peer under every allocator, rotating the order.
  `gemm`: the measured matrix-product rate (GFLOP/s), for each run's fraction of it."""
  key = WORKLOADS[workload][2]
  selection = select_ours(run, workload, allocators, select_steps)
  runs = [(who, alloc) for alloc in allocators for who in ("ours", "peer")]
  records = {r: [] for r in runs}
  for repeat in range(repeats):
    shift = repeat % len(runs)
    for who, alloc in runs[shift:] + runs[:shift]:
      variables = selection["chosen"][alloc] if who == "ours" else {}
      records[(who, alloc)].append(run(workload, who, variables, allocators[alloc]))
  rate = lambda who, alloc, i: records[(who, alloc)][i][key]
  best = {
    who: [max(allocators, key=lambda a, i=i, who=who: rate(who, a, i)) for i in range(repeats)]
    for who in ("ours", "peer")
  }
  best_ratios = [rate("ours", best["ours"][i], i) / rate("peer", best["peer"][i], i) for i in range(repeats)]
  same = {alloc: [rate("ours", alloc, i) / rate("peer", alloc, i) for i in range(repeats)] for alloc in allocators}
  rss = lambda who, alloc: [round(r["peak_rss_mb"]) for r in records[(who, alloc)]]
  # The peer does the same math: our count of FLOPs per step (XLA's) over its step time gives its fraction of peak.
  ours_first = records[("ours", next(iter(allocators)))][0]
  flops, peak = ours_first.get("flops_per_step"), ours_first.get("cpu_peak_gflops_per_s")
  fraction = lambda r: round(flops / r["step_s"] / (peak * 1e9), 4) if flops and peak else None
  of_gemm = lambda r: round(flops / r["step_s"] / (gemm * 1e9), 4) if flops and gemm else None
  return {
    "selection": selection,
    "best_vs_best": {
      "ratio_ours_over_peer": summary(best_ratios),
      "ratios": [round(r, 3) for r in best_ratios],
      "ours_best_allocator": best["ours"],
      "peer_best_allocator": best["peer"],
    },
    "same_settings": {alloc: {"ratios": [round(r, 3) for r in same[alloc]], **summary(same[alloc])} for alloc in same},
    "throughput": {f"{who}@{alloc}": [round(r[key], 2) for r in records[(who, alloc)]] for who, alloc in runs},
    "peak_rss_mb": {f"{who}@{alloc}": rss(who, alloc) for who, alloc in runs},
    "fraction_of_cpu_peak": {f"{who}@{alloc}": [fraction(r) for r in records[(who, alloc)]] for who, alloc in runs},
    "fraction_of_measured_gemm": {f"{who}@{alloc}": [of_gemm(r) for r in records[(who, alloc)]] for who, alloc in runs},
    "load_avg_1m": {f"{who}@{alloc}": [r["load_avg_1m_before"] for r in records[(who, alloc)]] for who, alloc in runs},
    "runs": {f"{who}@{alloc}": records[(who, alloc)] for who, alloc in runs},
  }


def report(workload: str, result: dict) -> None:
  """A few readable lines on stderr beside the JSON line."""
  bvb = result["best_vs_best"]
  print(
    f"{workload}: best vs best ours/peer {bvb['ratios']} (ours {bvb['ours_best_allocator']}, peer "
    f"{bvb['peer_best_allocator']}); chosen {result['selection']['chosen']}",
    file=sys.stderr,
  )
  for alloc, same in result["same_settings"].items():
    print(
      f"  same settings ({alloc}): {same['ratios']}; peak RSS MB ours {result['peak_rss_mb'][f'ours@{alloc}']} "
      f"peer {result['peak_rss_mb'][f'peer@{alloc}']}",
      file=sys.stderr,
    )


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS))
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument(
    "--env",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="set for both ours and the peer (BATCH, STEPS) or read only by ours (CONV, ACCUM, ...)",
  )
  parser.add_argument(
    "--variant",
    action="append",
    default=[],
    metavar="KEY=VALUE[,KEY=VALUE...]",
    help="a configuration of ours, run in every repeat (default: one, --env only)",
  )
  parser.add_argument("--best", action="store_true", help="best against best (see above); --variant is ignored")
  parser.add_argument("--select_steps", type=int, default=1, help="--best: timed steps of each selection run")
  parser.add_argument("--peer_python", default=os.path.expanduser("~/.cache/peerv/bin/python"))
  parser.add_argument("--peers_dir", default=PEERS)
  parser.add_argument(
    "--peer_malloc",
    choices=["default", "tuned"],
    default="default",
    help="'tuned' gives the peer the glibc malloc settings that ours applies to itself",
  )
  parser.add_argument(
    "--preload",
    default="",
    help="a malloc library for both ours and the peer (LD_PRELOAD), e.g. "
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 (Debian: libtcmalloc-minimal4)",
  )
  parser.add_argument("--timeout", type=float, default=3600)
  return parser.parse_args()


def main() -> None:
  args = parse_args()
  if not os.path.exists(args.peer_python):
    sys.exit(f"No peer venv python at {args.peer_python}: run `bash benchmarks/setup_peers.sh` first.")
  extra = dict(item.split("=", 1) for item in args.env)
  base_env = {**os.environ, "THREADS": str(args.threads), "PYTHONUNBUFFERED": "1", **extra}
  run = Runner(args, base_env)
  out = {
    "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    "machine": machine(args.threads),
    "threads": args.threads,
    "env": extra,
    "peer_malloc": args.peer_malloc,
  }
  if args.best:
    allocators = available_allocators()
    out["allocators"] = allocators
    gemm = out["machine"]["measured_gemm_gflops_per_s"]
    for name in args.workloads:
      out[name] = best_against_best(run, name, allocators, args.repeats, args.select_steps, gemm)
      report(name, out[name])
  else:
    out["preload"] = args.preload
    variants = {label: dict(item.split("=", 1) for item in label.split(",") if item) for label in args.variant or [""]}
    for name in args.workloads:
      out[name] = compare_variants(run, name, variants, args.repeats, args.preload)
  print(json.dumps(out))


if __name__ == "__main__":
  main()

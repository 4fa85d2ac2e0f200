"""Runs our benchmarks and the torch peers back to back, in one invocation, and prints one JSON line with the ratios.

    .venv/bin/python benchmarks/run_peers.py --workloads simclr clip --repeats 2
    .venv/bin/python benchmarks/run_peers.py --workloads simclr --env CONV=xla --env BATCH=64
    .venv/bin/python benchmarks/run_peers.py --workloads simclr --variant DEVICES=1 --variant DEVICES=2

Each repeat runs ours and the peer as separate subprocesses, one after the other, with the same THREADS and the same
environment variables (--env), rotating which goes first; the peer runs in its own venv (benchmarks/setup_peers.sh).
Each --variant is one more configuration of ours (its variables on top of --env), run in every repeat beside the
peer, so variants are compared under the same load. ratio = our throughput / the peer's of the same repeat; the
machine's 1-minute load average is recorded before every run, since on a shared machine the spread between repeats is
part of the result.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
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
  args = parser.parse_args()
  if not os.path.exists(args.peer_python):
    sys.exit(f"No peer venv python at {args.peer_python}: run `bash benchmarks/setup_peers.sh` first.")

  extra = dict(item.split("=", 1) for item in args.env)
  env = {
    **os.environ,
    "THREADS": str(args.threads),
    "PYTHONUNBUFFERED": "1",
    **extra,
    **({"LD_PRELOAD": args.preload} if args.preload else {}),
  }
  peer_env = {**env, **(TUNED_MALLOC_ENV if args.peer_malloc == "tuned" else {})}
  out = {
    "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    "threads": args.threads,
    "env": extra,
    "peer_malloc": args.peer_malloc,
    "preload": args.preload,
  }
  variants = {
    label: {**env, **dict(item.split("=", 1) for item in label.split(",") if item)} for label in args.variant or [""]
  }
  for name in args.workloads:
    ours_script, peer_script, key = WORKLOADS[name]
    ours_cmd = [sys.executable, os.path.join(ROOT, ours_script)]
    peer_cmd = [args.peer_python, os.path.join(args.peers_dir, peer_script)]
    runs = [("peer", peer_cmd, peer_env, args.peers_dir)] + [
      (label, ours_cmd, run_env, ROOT) for label, run_env in variants.items()
    ]
    records = {who: [] for who, *_ in runs}
    for repeat in range(args.repeats):
      shift = repeat % len(runs)
      for who, cmd, run_env, cwd in runs[shift:] + runs[:shift]:
        records[who].append(run_json(cmd, run_env, cwd, args.timeout))
    theirs = records.pop("peer")
    out[name] = {
      f"peer_{key}": [round(t[key], 2) for t in theirs],
      "peer_peak_rss_mb": [round(t["peak_rss_mb"]) for t in theirs],
      "peer": theirs,
    }
    for label, ours in records.items():
      ratios = [o[key] / t[key] for o, t in zip(ours, theirs)]
      out[name][label or "ours"] = {
        "ratio_ours_over_peer": summary(ratios),
        "ratios": [round(r, 3) for r in ratios],
        f"ours_{key}": [round(o[key], 2) for o in ours],
        "ours_peak_rss_mb": [round(o["peak_rss_mb"]) for o in ours],
        "load_avg_1m": [[o["load_avg_1m_before"], t["load_avg_1m_before"]] for o, t in zip(ours, theirs)],
        "runs": ours,
      }
  print(json.dumps(out))


if __name__ == "__main__":
  main()

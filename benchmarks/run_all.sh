#!/usr/bin/env bash
# The CPU figures of benchmarks/README.md's acceptance table in one command; run it on a quiet machine.
#
#   bash benchmarks/run_all.sh [OUT_DIR]            # default /tmp/contrastive-bench-<UTC date-time>
#   QUALITY=1 bash benchmarks/run_all.sh            # also time-to-accuracy at 900 s and 1800 s (~3 more hours)
#
# 1. the peers' venv (benchmarks/setup_peers.sh) and the machine (lscpu, load average);
# 2. run_peers.py --best --repeats ${REPEATS:-3}: SimCLR and CLIP, each side at its fastest one-switch setting
#    (allocator: glibc / tcmalloc / jemalloc where installed; ours also DEVICES and CONV), best-vs-best and
#    same-settings ratios, peak RSS, FLOP/s and fraction of the CPU's peak (~40 minutes on 2 cores);
# 3. loss_memory.py up to a 1,048,576 global batch on 8 fake devices (compilation only, seconds);
# 4. with QUALITY=1: simclr_cifar10_quality.py, ours and the peer, BUDGET_S=900 and 1800, each side with the
#    allocator and switches that won step 2, kNN top-1 and the embedding time of each.
# Everything lands in OUT_DIR; a summary is printed at the end. tcmalloc: apt-get install libtcmalloc-minimal4.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-/tmp/contrastive-bench-$(date -u +%Y%m%d-%H%M)}"
py="$root/.venv/bin/python"
peer_py="${PEER_PYTHON:-$HOME/.cache/peerv/bin/python}"
mkdir -p "$out"
cd "$root"

bash benchmarks/setup_peers.sh "$(dirname "$(dirname "$peer_py")")"
{ date -u; uptime; lscpu; } >"$out/machine.txt"
ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 >/dev/null 2>&1 ||
  echo "note: no tcmalloc here (apt-get install libtcmalloc-minimal4): the allocator choice is glibc only" | tee -a "$out/machine.txt"

echo "== run_peers --best ($out/run_peers_best.json)"
"$py" benchmarks/run_peers.py --best --workloads simclr clip --repeats "${REPEATS:-3}" --peer_python "$peer_py" \
  >"$out/run_peers_best.json" 2> >(tee "$out/run_peers_best.log" >&2)

echo "== loss_memory ($out/loss_memory.jsonl)"
"$py" benchmarks/loss_memory.py --time_up_to 0 >"$out/loss_memory.jsonl"

if [ "${QUALITY:-0}" = 1 ]; then
  # Each side's winning settings from step 2: "LD_PRELOAD=... KEY=VALUE ..." for ours, "LD_PRELOAD=..." for the peer.
  read -r ours_env peer_env < <("$py" - "$out/run_peers_best.json" <<'EOF'
import collections, json, sys
result = json.load(open(sys.argv[1]))
simclr, allocators = result["simclr"], result["allocators"]
best = lambda who: collections.Counter(simclr["best_vs_best"][f"{who}_best_allocator"]).most_common(1)[0][0]
ours, peer = best("ours"), best("peer")
ours_vars = ",".join(f"{k}={v}" for k, v in simclr["selection"]["chosen"][ours].items())
print(f"LD_PRELOAD={allocators[ours]},{ours_vars} LD_PRELOAD={allocators[peer]}")
EOF
  )
  for budget in 900 1800; do
    echo "== quality, BUDGET_S=$budget: ours ($ours_env), peer ($peer_env)"
    env BUDGET_S=$budget ${ours_env//,/ } "$py" benchmarks/simclr_cifar10_quality.py | tail -n 1 >"$out/quality_ours_$budget.json"
    (cd ../shared/peers && env BUDGET_S=$budget $peer_env "$peer_py" simclr_cifar10_quality_torch.py) | tail -n 1 \
      >"$out/quality_peer_$budget.json"
  done
fi

echo "== summary ($out)"
"$py" - "$out" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
result = json.load(open(os.path.join(out, "run_peers_best.json")))
print(result["date"], result["machine"]["cpu"], result["machine"]["isa"], "peak", result["machine"]["cpu_peak_gflops_per_s"], "GFLOP/s")
for name in ("simclr", "clip"):
  r = result[name]
  print(f"{name}: best vs best {r['best_vs_best']['ratios']}, same settings",
        {a: s["ratios"] for a, s in r["same_settings"].items()}, "peak RSS MB", r["peak_rss_mb"])
  for who, fractions in r["fraction_of_cpu_peak"].items():
    print(f"  {who}: fraction of the CPU's float32 peak {fractions}, load {r['load_avg_1m'][who]}")
for line in open(os.path.join(out, "loss_memory.jsonl")):
  row = json.loads(line)
  if row.get("global_batch") == 1048576 and "summary" not in row:
    print(f"loss memory 1M {row['loss']} {row['mode']}: temp {row['temp_mib']} MiB, peak {row['peak_mib']} MiB")
for path in sorted(glob.glob(os.path.join(out, "quality_*.json"))):
  print(os.path.basename(path), open(path).read().strip())
EOF

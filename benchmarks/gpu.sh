#!/usr/bin/env bash
# The GPU benchmark in one call (under 8 minutes on one H100 / H200): our ViT-B/16 CLIP bf16 step at the largest batch
# that fits (chunked loss), the same step in plain torch + timm at that batch, and our SimCLR ResNet-50 step on 224 px
# views; one JSON line each (images/s, MFU, peak device memory) on stdout and in $OUT/gpu_results.jsonl.
#
#   bash benchmarks/gpu.sh --prepare   # once, on a machine with PyPI: the pure-Python packages the GPU image lacks,
#                                      # into .gpu_deps/ (git-ignored; carry it to the GPU machine)
#   bash benchmarks/gpu.sh             # on the GPU machine (its own jax, flax, optax, orbax, chex, torch, timm)
#   GPU_BENCH_SIZE=tiny bash benchmarks/gpu.sh   # tiny models, CPU: what tests/test_benchmarks.py runs
#
# Environment: PYTHON (python3), OUT (where gpu_results.jsonl goes, default /tmp), CLIP_BATCH (0: largest that fits),
# SIMCLR_BATCH, STEPS, TORCH_COMPILE=1, GPU_BENCH_SIZE=tiny. Each part has its own time limit and a part that fails
# or lacks its packages prints a line saying so; the others still run.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python=${PYTHON:-python3}
if [ "${1:-}" = "--prepare" ]; then
  exec "$python" -m pip install -q --upgrade --target "$root/.gpu_deps" --no-deps ml_collections==1.1.0 absl-py==2.5.1 PyYAML
fi
export PYTHONPATH="$root:$root/.gpu_deps${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}  # JAX's pool: most of the GPU
out="${OUT:-/tmp}/gpu_results.jsonl"
mkdir -p "$(dirname "$out")"
: >"$out"
tiny=$([ "${GPU_BENCH_SIZE:-}" = tiny ] && echo 1 || echo 0)
limit() { if [ "$tiny" = 1 ]; then echo 180; else echo "$1"; fi; }

note() { echo "{\"workload\": \"$1\", \"skipped\": \"$2\"}" | tee -a "$out"; }
part() {  # part NAME SECONDS COMMAND...: one JSON line per workload, or one saying why there is none
  local name=$1 seconds=$2
  shift 2
  local lines
  lines=$(timeout "$seconds" "$@" 2>"$out.$name.log" | grep '^{')
  if [ -n "$lines" ]; then echo "$lines" | tee -a "$out"; else note "$name" "failed or timed out ($seconds s): $(tail -c 300 "$out.$name.log" | tr '\n"' ' ')"; fi
}

missing=$("$python" -c "
import importlib.util as u
print(' '.join(m for m in ('jax', 'flax', 'optax', 'orbax.checkpoint', 'chex', 'ml_collections', 'yaml', 'absl') if u.find_spec(m.split('.')[0]) is None))
")
if [ -n "$missing" ]; then
  note ours "missing Python packages: $missing (run bash benchmarks/gpu.sh --prepare where PyPI is reachable)"
else
  part ours "$(limit 330)" "$python" "$root/benchmarks/gpu_step.py" simclr clip
fi
# The peer runs at our CLIP batch, and its MFU counts our XLA FLOPs per pair (same shapes).
read -r batch flops < <("$python" -c "
import json
rows = [json.loads(l) for l in open('$out') if l.startswith('{')]
clip = next((r for r in rows if r.get('workload') == 'clip_vit_b16_bf16' and 'batch' in r), {})
print(clip.get('batch', 0), clip.get('model_flops_per_step', 0) / max(clip.get('batch', 1), 1))
")
[ "$batch" != 0 ] && export BATCH=$batch FLOPS_PER_PAIR=$flops
part clip_torch "$(limit 120)" "$python" "$root/benchmarks/gpu_torch_clip.py"

#!/usr/bin/env bash
# Creates the torch peers' own venv (torch, open_clip, lightly) for benchmarks/run_peers.py; never the project's venv.
# Usage: bash benchmarks/setup_peers.sh [VENV_DIR]   (default: $HOME/.cache/peerv; kept when it already works)
set -euo pipefail
venv=${1:-$HOME/.cache/peerv}
peers="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/peers"
if "$venv/bin/python" -c "import torch, open_clip, lightly" 2>/dev/null; then
  echo "peers venv already ready: $venv"
elif [ -f "$peers/setup.sh" ]; then
  bash "$peers/setup.sh" "$venv"
else
  echo "no peer scripts at $peers (they live in ../shared/peers beside the project)" >&2
  exit 1
fi

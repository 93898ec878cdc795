#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default model (all-MiniLM-L6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VIRTUAL_ENV:-$PWD/.venv}"
exec "$VENV/bin/neuron-encoder" quickstart "$@"

#!/usr/bin/env bash
# Set up (if needed) and run the test suite; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VIRTUAL_ENV:-$PWD/.venv}"
exec "$VENV/bin/python" -m pytest -q "$@"

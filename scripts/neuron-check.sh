#!/usr/bin/env bash
# The first run on a Neuron instance (inf2, trn1, trn2), one command: set up in a torch-neuronx venv (its torch
# and the packages neuronx-cc pins are kept), run the `neuron` tests on the devices, then the NeuronPerf-style
# benchmark and its report, and print where the report is. Everything it prints is also under $OUT.
#   bash scripts/neuron-check.sh [--install] [--tests-only] [BENCH_CONFIG]
#     --install     make the venv when there is none (Neuron 2.32 DLAMIs have none): python3.12 -m venv, then the
#                   compiler + torch-neuronx pair from AWS's Neuron pip repository (NEURON_SDK=2.31 for the
#                   compiler of the SageMaker container; default: the newest release's pair)
#     --tests-only  stop after the `neuron` tests (minutes), without the benchmark (about an hour)
#   The venv: $VIRTUAL_ENV, else the 2.31 DLAMI's /opt/aws_neuronx_venv_pytorch_2_9, else ~/neuron-venv.
# Exit: 0 all passed; 2 a bad option; 5 no Neuron SDK or devices here; otherwise the failing step's own status.
set -euo pipefail
cd "$(dirname "$0")/.."
INSTALL=0
TESTS_ONLY=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --install) INSTALL=1 ;;
        --tests-only) TESTS_ONLY=1 ;;
        -*) echo "neuron-check: unknown option $1 (use --install, --tests-only)" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
CONFIG="${1:-benchmarks/configs/inf2-neuronperf.json}"
OUT="${NEURON_CHECK_OUT:-runs/neuron-check-$(date -u +%Y%m%dT%H%M%SZ)}"
DLAMI_VENV=/opt/aws_neuronx_venv_pytorch_2_9  # Neuron 2.31's "Deep Learning AMI Neuron PyTorch 2.9"
if [ -n "${VIRTUAL_ENV:-}" ]; then VENV="$VIRTUAL_ENV"
elif [ -x "$DLAMI_VENV/bin/python" ]; then VENV="$DLAMI_VENV"
else VENV="$HOME/neuron-venv"; fi
REPOSITORY=https://pip.repos.neuron.amazonaws.com
# The pinned pair comes from the platform table, which a bare python3 can read before any venv exists.
PIN="$(python3 neuron_encoder/platforms.py pins ${NEURON_SDK:-})" || exit 2
fail() { echo "neuron-check: $*" >&2; exit 5; }
has_trace() { "$VENV/bin/python" -c 'import sys, torch_neuronx; sys.exit(not callable(getattr(torch_neuronx, "trace", None)))' 2>/dev/null; }

if [ "$INSTALL" = 1 ] && [ ! -x "$VENV/bin/python" ]; then
    command -v python3.12 >/dev/null || fail "--install needs python3.12 (torch-neuronx takes 3.11-3.13): sudo apt-get install -y python3.12-venv"
    echo "neuron-check: creating $VENV (python3.12)" >&2
    python3.12 -m venv "$VENV"
fi
if [ "$INSTALL" = 1 ] && ! has_trace; then
    echo "neuron-check: installing $PIN into $VENV from $REPOSITORY" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install $PIN --extra-index-url="$REPOSITORY"
fi
[ -x "$VENV/bin/python" ] || fail "no venv at $VENV. Run again with --install (a python3.12 venv with $PIN), \
or use a Neuron 2.31 \"Deep Learning AMI Neuron PyTorch 2.9\" (Neuron 2.32 DLAMIs no longer ship torch-neuronx)"
has_trace || fail "torch_neuronx with trace() is not in $VENV: run again with --install, or: $VENV/bin/python -m pip \
install $PIN --extra-index-url=$REPOSITORY"
ls /dev/neuron* >/dev/null 2>&1 || fail "no /dev/neuron*: run this on an inf2/trn1/trn2 instance \
(in a container: docker run --device=/dev/neuron0 ...)"
if [ "$#" -eq 0 ] && [ "$TESTS_ONLY" = 0 ] && [ "$(grep -o '^trn2' /sys/devices/virtual/dmi/id/product_name 2>/dev/null)" = trn2 ]; then
    fail "$CONFIG compiles for inf2, which a trn2 cannot run: pass a benchmark config with \"target\": \"trn2\""
fi

VIRTUAL_ENV="$VENV" bash scripts/setup.sh
PY="$VENV/bin/python"
mkdir -p "$OUT"
echo "neuron-check: writing to $OUT" >&2
{ neuron-ls || true; "$PY" -c 'import torch, torch_neuronx; print("torch", torch.__version__, "torch-neuronx", torch_neuronx.__version__)'; } \
    2>&1 | tee "$OUT/versions.txt"
NEURON_ENCODER_REQUIRE_DEVICE=1 "$PY" -m pytest -q -m neuron -rs -p no:cacheprovider tests/test_neuron_device.py \
    2>&1 | tee "$OUT/neuron-tests.txt"
if [ "$TESTS_ONLY" = 1 ]; then
    echo "neuron-check: neuron tests passed (--tests-only: no benchmark); log: $OUT/neuron-tests.txt"
    exit 0
fi
"$PY" benchmarks/bench.py "$CONFIG" --out-dir "$OUT/bench" 2>&1 | tee "$OUT/bench.txt"
echo "neuron-check: tests passed; report: $OUT/bench/report/report.md (log: $OUT/bench.txt)"

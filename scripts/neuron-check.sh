#!/usr/bin/env bash
# The first run on a Neuron instance (inf2, trn1, trn2), one command: set up in the DLAMI's torch-neuronx
# venv (its torch is never replaced), run the `neuron` tests on the devices, then the NeuronPerf-style
# benchmark and its report, and print where the report is. Everything it prints is also under $OUT.
#   bash scripts/neuron-check.sh [BENCH_CONFIG]     default: benchmarks/configs/inf2-neuronperf.json
# Exit: 0 all passed; 5 no Neuron SDK or devices here; otherwise the failing step's own status.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-benchmarks/configs/inf2-neuronperf.json}"
OUT="${NEURON_CHECK_OUT:-runs/neuron-check-$(date -u +%Y%m%dT%H%M%SZ)}"
VENV="${VIRTUAL_ENV:-/opt/aws_neuronx_venv_pytorch_2_9}"  # Neuron 2.31's "Deep Learning AMI Neuron PyTorch 2.9"
PIN="neuronx-cc==2.27.5334.0 torch-neuronx==2.9.0.2.15.32035"  # setup/pytorch/manual.rst (Neuron 2.32)
fail() { echo "neuron-check: $*" >&2; exit 5; }

[ -x "$VENV/bin/python" ] || fail "no venv at $VENV. Use a Neuron 2.31 \"Deep Learning AMI Neuron PyTorch 2.9\" \
(Neuron 2.32 DLAMIs no longer ship torch-neuronx), or activate a venv with: python -m pip install $PIN \
--extra-index-url=https://pip.repos.neuron.amazonaws.com"
ls /dev/neuron* >/dev/null 2>&1 || fail "no /dev/neuron*: run this on an inf2/trn1/trn2 instance \
(in a container: docker run --device=/dev/neuron0 ...)"
"$VENV/bin/python" -c 'import sys, torch_neuronx; sys.exit(not callable(getattr(torch_neuronx, "trace", None)))' \
    2>/dev/null || fail "torch_neuronx with trace() is not in $VENV: python -m pip install $PIN \
--extra-index-url=https://pip.repos.neuron.amazonaws.com"
if [ "$#" -eq 0 ] && [ "$(grep -o '^trn2' /sys/devices/virtual/dmi/id/product_name 2>/dev/null)" = trn2 ]; then
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
"$PY" benchmarks/bench.py "$CONFIG" --out-dir "$OUT/bench" 2>&1 | tee "$OUT/bench.txt"
echo "neuron-check: tests passed; report: $OUT/bench/report/report.md (log: $OUT/bench.txt)"

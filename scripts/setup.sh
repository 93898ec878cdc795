#!/usr/bin/env bash
# Set up a virtual environment for neuron-encoder: idempotent, offline except for the package index.
# Uses the active venv ($VIRTUAL_ENV, e.g. a Neuron DLAMI's) or creates .venv in the checkout.
# A torch already there is kept (torch-neuronx pins it); with none, $TORCH_SPEC is installed: the CPU build
# unless an NVIDIA GPU is present (nvidia-smi).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VIRTUAL_ENV:-$PWD/.venv}"
EXTRAS="${NEURON_ENCODER_EXTRAS:-test}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "setup: creating $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
fi
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }
torch_before="$("$PY" -W ignore -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
if [ -z "$torch_before" ]; then
    # PyPI's Linux torch is the CUDA build (gigabytes of NVIDIA libraries): without an NVIDIA GPU, PyTorch's
    # own CPU wheel index is added for this one install (TORCH_INDEX_URL overrides it; empty disables it).
    index_args=()
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        index_url="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
        # An index that cannot be reached would cost pip minutes of retries per package: look once.
        if [ -n "$index_url" ] && "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)' \
                "$index_url/torch/" >/dev/null 2>&1; then
            index_args=(--extra-index-url "$index_url")
        elif [ -n "$index_url" ]; then
            echo "setup: $index_url cannot be reached; torch comes from the configured package index" >&2
        fi
    fi
    echo "setup: no torch in $VENV; installing $TORCH_SPEC ${index_args[*]:-}" >&2
    pip_install "${index_args[@]}" "$TORCH_SPEC"
    torch_before="$("$PY" -W ignore -c 'import torch; print(torch.__version__)')"
    echo "setup: installed torch $("$PY" -W ignore -c 'import torch
print(torch.__version__, "(CUDA " + torch.version.cuda + " build)" if torch.version.cuda else "(CPU build)")')" >&2
fi
# Re-install only when pyproject.toml changed: a second run costs a second, not a resolve.
stamp="$VENV/.neuron-encoder-$(sha256sum pyproject.toml | cut -c1-16)-$EXTRAS"
if [ ! -f "$stamp" ]; then
    echo "setup: installing neuron-encoder[$EXTRAS] (editable) into $VENV" >&2
    # The torch that is there is a constraint: pip fails rather than replace it (a Neuron venv pins it).
    constraints="$(mktemp)"
    trap 'rm -f "$constraints"' EXIT
    echo "torch==$torch_before" > "$constraints"
    if [ "$VENV" != "$PWD/.venv" ]; then
        # Someone else's venv (a Neuron SDK's): neuronx-cc pins other packages with upper bounds, so every
        # package already there is a constraint too, and pip check must pass afterwards.
        "$PY" -m pip list --format=freeze --exclude-editable --disable-pip-version-check \
            | { grep -iv '^neuron[-_]encoder==' || true; } > "$constraints"
    fi
    pip_install --constraint "$constraints" -e ".[$EXTRAS]"
    if [ "$VENV" != "$PWD/.venv" ] && ! "$PY" -m pip check; then
        echo "setup: pip check failed in $VENV after installing neuron-encoder" >&2
        exit 1
    fi
    touch "$stamp"
fi
torch_after="$("$PY" -W ignore -c 'import torch; print(torch.__version__)')"
if [ "$torch_before" != "$torch_after" ]; then
    echo "setup: torch changed from $torch_before to $torch_after; a Neuron venv needs its pinned torch back" >&2
    exit 1
fi
echo "setup: ready ($VENV, torch $torch_after)" >&2

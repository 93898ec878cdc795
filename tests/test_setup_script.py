"""scripts/setup.sh in someone else's venv (a Neuron SDK's): it keeps every package there and runs pip check.

A stand-in python logs each call, so the test sees what setup.sh asks pip, not what pip does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# torch and its list as a Neuron venv has them; the constraints file is copied aside (setup.sh deletes it).
FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$LOG"
case "$*" in
  *"import torch"*) echo 2.9.0 ;;
  "-m pip list"*) printf 'torch==2.9.0\\nscipy==1.13.1\\nneuron-encoder==0.0.9\\nneuronx-cc==2.27.5334.0\\n' ;;
  *"pip install"*) for a in "$@"; do if [ -f "$a" ]; then cp "$a" "$LOG.constraints"; fi; done ;;
  "-m pip check") exit "${PIP_CHECK_STATUS:-0}" ;;
esac
"""


@pytest.mark.parametrize("check_status", [0, 1])
def test_setup_in_a_neuron_venv_keeps_every_package_and_runs_pip_check(tmp_path, check_status):
    """Issue 20, item 7: neuronx-cc pins scipy, networkx, islpy ... with upper bounds; torch alone is not enough."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": str(venv), "LOG": str(log), "PIP_CHECK_STATUS": str(check_status)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    pip_calls = [line.split(" --")[0] for line in log.read_text().splitlines() if line.startswith("-m pip")]
    assert pip_calls == ["-m pip list", "-m pip install", "-m pip check"]
    assert Path(f"{log}.constraints").read_text().split() == ["torch==2.9.0", "scipy==1.13.1",
                                                             "neuronx-cc==2.27.5334.0"]
    assert done.returncode == check_status, done.stderr
    assert ("pip check failed" in done.stderr) == bool(check_status)
    assert any(venv.glob(".neuron-encoder-*")) != bool(check_status)  # a failed setup is tried again next time

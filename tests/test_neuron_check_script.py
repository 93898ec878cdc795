"""scripts/neuron-check.sh before any Neuron device is reached: its options, and `--install` making the venv
a Neuron 2.32 DLAMI lacks, with the pinned pair from the platform table (stand-in pythons log each call)."""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import pytest

from neuron_encoder import platforms

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "--extra-index-url=https://pip.repos.neuron.amazonaws.com"
# python3.12: `-m venv DIR` makes DIR/bin/python, a stand-in that logs calls and has torch_neuronx once
# the pair is installed.
FAKE_PYTHON312 = """#!/bin/bash
echo "python3.12 $*" >> "$LOG"
mkdir -p "$3/bin"
cat > "$3/bin/python" <<'INNER'
#!/bin/bash
echo "venv $*" >> "$LOG"
case "$*" in
  -c*torch_neuronx*) [ -f "$LOG.installed" ] ;;
  *"pip install"*neuronx-cc==*) touch "$LOG.installed" ;;
esac
INNER
chmod +x "$3/bin/python"
"""


def run_check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3.12").write_text(FAKE_PYTHON312)
    (bin_dir / "python3.12").chmod(0o755)
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LOG": str(tmp_path / "calls.log"),
                   "VIRTUAL_ENV": str(tmp_path / "venv"), **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "neuron-check.sh"), *args], env=environment,
                          capture_output=True, text=True, timeout=60)


def test_an_unknown_option_is_exit_2(tmp_path):
    done = run_check(tmp_path, "--bench-only")
    assert done.returncode == 2 and "unknown option --bench-only" in done.stderr
    done = run_check(tmp_path, "--install", NEURON_SDK="2.99")
    assert done.returncode == 2 and "usage: platforms.py pins [2.31|2.32]" in done.stderr


def test_without_a_venv_it_says_how_to_make_one(tmp_path):
    done = run_check(tmp_path)
    assert done.returncode == 5
    assert "run again with --install" in done.stderr.lower()
    assert platforms.RELEASES[platforms.LATEST].pins in done.stderr


@pytest.mark.skipif(bool(glob.glob("/dev/neuron*")), reason="a Neuron host would go on to the device tests")
@pytest.mark.parametrize("sdk", ["", "2.31"])
def test_install_makes_a_python312_venv_with_the_pinned_pair(tmp_path, sdk):
    """Issue 20: a 2.32 DLAMI has no torch-neuronx venv; --install makes the documented one, then the
    device check stops this host (no /dev/neuron*) with exit 5."""
    done = run_check(tmp_path, "--install", "--tests-only", **({"NEURON_SDK": sdk} if sdk else {}))
    assert done.returncode == 5 and "no /dev/neuron*" in done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    pins = platforms.RELEASES[sdk or platforms.LATEST].pins
    assert calls[0] == f"python3.12 -m venv {tmp_path}/venv"
    assert f"venv -m pip install {pins} {REPOSITORY}" in calls
    assert calls.index(f"venv -m pip install {pins} {REPOSITORY}") < len(calls) - 1  # torch_neuronx checked after

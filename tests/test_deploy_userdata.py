"""The instance script: its first action caps the instance's life, a trap always uploads and shuts down,
the package goes in without replacing torch, and it fits EC2's 16 KB."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from neuron_encoder.deploy.userdata import USER_DATA_LIMIT, Script, render
from neuron_encoder.errors import DeployError


def script(**changes) -> Script:
    fields = dict(run_id="ne-20260101-000000-abcd", instance_type="inf2.xlarge", family="neuron",
                  region="us-east-1", bucket="my-bucket",
                  results_prefix="neuron-encoder/ne-20260101-000000-abcd/results",
                  max_minutes=120, bench_script_key="neuron-encoder/ne/staging/00-bench.py",
                  bench_config_key="neuron-encoder/ne/staging/configs/02-fleet-neuron.json",
                  wheel_key="neuron-encoder/ne/staging/wheel/neuron_encoder-0.1.0-py3-none-any.whl")
    fields.update(changes)
    return Script(**fields)


def commands(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("family, instance_type", [("neuron", "inf2.xlarge"), ("gpu", "g5.xlarge"),
                                                   ("cpu", "c7i.xlarge")])
def test_first_action_caps_the_lifetime_and_a_trap_always_uploads_and_shuts_down(family, instance_type):
    text = render(script(family=family, instance_type=instance_type))
    lines = commands(text)
    assert text.startswith("#!/bin/bash\n")
    assert lines[0] == "shutdown -h +120"  # the first command after the shebang
    trap = lines.index("trap finish EXIT")
    first_install = next(i for i, line in enumerate(lines) if "pip install" in line and "awscli" not in line)
    assert trap < first_install  # anything that fails after the trap still uploads and shuts down
    finish = text[text.index("finish() {"):text.index("trap finish EXIT")]
    assert 's3 cp --recursive' in finish and '"$DEST/"' in finish and "shutdown -h now" in finish
    assert len(text.encode()) < USER_DATA_LIMIT


def test_installs_into_the_images_python_without_replacing_torch():
    text = render(script())
    assert "PY=/opt/aws_neuronx_venv_pytorch_2_9/bin/python" in text
    assert '"$PY" -m pip install -q -c "$WORK/frozen.txt" "$WORK/neuron_encoder-0.1.0-py3-none-any.whl[bench]"' \
        in text
    assert 'if [ "$torch_before" != "$torch_after" ]' in text
    assert text.index("torch_before=") < text.index("-m pip install -q -c") < text.index("torch_after=")
    assert "import torch_neuronx; torch_neuronx.trace" in text  # SDK 2.32+ images have no torch-neuronx


# A stand-in for the image's Python: logs each call, answers torch's version and a package list like a
# Neuron venv's (neuronx-cc pins scipy with an upper bound), and fails `pip check` when told to.
FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$WORK/calls.log"
case "$*" in
  -c*) echo 2.9.0 ;;
  "-m pip list"*) printf 'torch==2.9.0\\nscipy==1.13.1\\nneuron-encoder==0.0.9\\nneuronx-cc==2.26.6360.0\\n' ;;
  "-m pip check") exit "${PIP_CHECK_STATUS:-0}" ;;
esac
"""


@pytest.mark.parametrize("check_status, exit_code", [(0, 0), (1, 4)])
def test_the_install_keeps_every_package_of_the_image_and_runs_pip_check(tmp_path, check_status, exit_code):
    """Issue 20, item 7: neuronx-cc pins other packages with upper bounds, so the install is constrained by
    the venv's own package list (not torch alone), and `pip check` runs after it; a failure stops the run."""
    text = render(script(package_spec="neuron-encoder[bench]==0.1.0", wheel_key=None))
    block = text[text.index("torch_before="):text.index('echo "neuron-encoder: installed')]
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "WORK": str(tmp_path), "PY": str(python), "PIP_CHECK_STATUS": str(check_status)}
    done = subprocess.run(["bash", "-c", "set -e\n" + block], env=env, capture_output=True, text=True)
    assert done.returncode == exit_code, done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c for c in calls if c.startswith("-m pip")] == [
        "-m pip list --format=freeze --exclude-editable",
        f"-m pip install -q -c {tmp_path}/frozen.txt neuron-encoder[bench]==0.1.0", "-m pip check"]
    assert (tmp_path / "frozen.txt").read_text().split() == ["torch==2.9.0", "scipy==1.13.1", "neuronx-cc==2.26.6360.0"]
    assert ("pip check failed" in done.stdout) == bool(check_status)


def test_runs_the_staged_bench_config_and_compile_config_when_given():
    plain = render(script())
    assert 's3://$BUCKET/neuron-encoder/ne/staging/configs/02-fleet-neuron.json' in plain
    assert '"$PY" "$WORK/bench.py" "$WORK/bench-config.json" --out-dir "$WORK/results"' in plain
    assert "compile.py" not in plain
    compiled = render(script(compile_script_key="k/01-compile.py", compile_config_key="k/configs/03-minilm-inf2.json"))
    assert compiled.index('"$PY" "$WORK/compile.py"') < compiled.index('"$PY" "$WORK/bench.py"')


def test_cpu_makes_a_python_312_venv_with_cpu_torch_and_a_pypi_spec_installs_verbatim():
    text = render(script(family="cpu", instance_type="c7i.xlarge", wheel_key=None,
                         package_spec="neuron-encoder[bench]==0.1.0"))
    assert "python3.12 -m venv /opt/neuron-encoder-venv" in text
    assert "--index-url https://download.pytorch.org/whl/cpu torch" in text
    assert "'neuron-encoder[bench]==0.1.0'" in text and ".whl" not in text


def test_exactly_one_package_source():
    with pytest.raises(DeployError, match="exactly one"):
        render(script(package_spec="neuron-encoder"))
    with pytest.raises(DeployError, match="exactly one"):
        render(script(wheel_key=None))


def test_too_big_for_ec2_is_an_error_not_a_truncated_script():
    with pytest.raises(DeployError, match="over EC2's 16384"):
        render(script(bench_config_key="k" * USER_DATA_LIMIT))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to parse the script")
@pytest.mark.parametrize("family", ["neuron", "gpu", "cpu"])
def test_bash_parses_it(family, tmp_path):
    path = tmp_path / "user-data.sh"
    path.write_text(render(script(family=family, compile_script_key="a", compile_config_key="b")))
    completed = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr

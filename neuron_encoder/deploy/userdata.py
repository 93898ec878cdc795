"""The script each benchmark instance runs at boot: cap its life, install, compile, benchmark, upload, stop.

Its first action schedules the shutdown that ends the instance (InstanceInitiatedShutdownBehavior
is terminate), so a hung compile or a lost laptop costs at most --max-hours. A trap uploads the logs
and results and shuts down however the script ends. The package goes into the image's own Python
(the DLAMI venv whose torch torch-neuronx pins) under a constraint that keeps torch, and the torch
version is compared before and after, as scripts/setup.sh does.
"""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass

from ..errors import DeployError
from .amis import FAMILIES

USER_DATA_LIMIT = 16 * 1024  # EC2: user data is limited to 16 KB before base64 encoding
VENV = "/opt/neuron-encoder-venv"
WORK = "/opt/neuron-encoder"


@dataclass(frozen=True)
class Script:
    """What one instance needs to know; S3 keys are relative to the bucket."""

    run_id: str
    instance_type: str
    family: str
    region: str
    bucket: str
    results_prefix: str
    max_minutes: int
    bench_script_key: str
    bench_config_key: str
    wheel_key: str | None = None  # the wheel staged from this checkout, or
    package_spec: str | None = None  # a pip requirement (e.g. 'neuron-encoder[bench]==0.1.0')
    compile_script_key: str | None = None
    compile_config_key: str | None = None


class _Template(string.Template):
    delimiter = "@"  # bash owns "$"; a literal "@" is written "@@"


_HEAD = """#!/bin/bash
# neuron-encoder benchmark run @run_id on @instance_type (@family). Written by neuron_encoder/deploy/userdata.py.
# First of all: the hard cap on this instance's life. Shutdown terminates it.
shutdown -h +@max_minutes
set -uo pipefail
export HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
WORK=@work
mkdir -p "$WORK/results" && cd "$WORK"
exec >>"$WORK/results/run.log" 2>&1
echo "neuron-encoder: run @run_id starting at $(date -u +%FT%TZ)"
REGION=@region
BUCKET=@bucket
PY=@python
token=$(curl -sS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 600' http://169.254.169.254/latest/api/token)
IID=$(curl -sS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id)
DEST="s3://$BUCKET/@results_prefix/@instance_type-$IID"
s3() {
  if command -v aws >/dev/null; then aws --region "$REGION" s3 "$@@"
  else [ -d /opt/ne-tools ] || "$PY" -m pip install -q --target /opt/ne-tools awscli
       PYTHONPATH=/opt/ne-tools "$PY" -m awscli --region "$REGION" s3 "$@@"; fi
}
finish() {
  code=$?
  echo "neuron-encoder: finished with exit code $code at $(date -u +%FT%TZ)"
  cp /var/log/cloud-init-output.log "$WORK/results/" 2>/dev/null || true
  s3 cp --recursive --only-show-errors "$WORK/results" "$DEST/" || echo "neuron-encoder: upload to $DEST failed"
  shutdown -h now
}
trap finish EXIT
set -e
"""

_PYTHON = {
    # Amazon Linux 2023's python3 is 3.9; this package needs >= 3.10, and torch comes from the CPU index.
    "cpu": """dnf install -y -q python3.12 python3.12-pip
python3.12 -m venv @venv
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch
""",
    "gpu": """"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"'
""",
    "neuron": """"$PY" -c 'import torch_neuronx; torch_neuronx.trace' || { echo "neuron-encoder: this image has no \
torch-neuronx (Neuron SDK 2.32+ DLAMIs dropped it): pass --ami with a PyTorch DLAMI of SDK 2.31 or earlier"; exit 3; }
""",
}

_INSTALL = """torch_before=$("$PY" -c 'import torch; print(torch.__version__)')
"$PY" -m pip list --format=freeze --exclude-editable | { grep -iv '^neuron[-_]encoder==' || true; } > "$WORK/frozen.txt"
@fetch_package
"$PY" -m pip install -q -c "$WORK/frozen.txt" @requirement
"$PY" -m pip check || { echo "neuron-encoder: pip check failed in $PY after installing"; exit 4; }
torch_after=$("$PY" -c 'import torch; print(torch.__version__)')
if [ "$torch_before" != "$torch_after" ]; then
  echo "neuron-encoder: torch changed from $torch_before to $torch_after; not benchmarking a replaced torch"; exit 4
fi
echo "neuron-encoder: installed into $PY, every package it had kept (torch $torch_after)"
"""

_RUN = """s3 cp --only-show-errors "s3://$BUCKET/@bench_script_key" "$WORK/bench.py"
s3 cp --only-show-errors "s3://$BUCKET/@bench_config_key" "$WORK/bench-config.json"
@compile
"$PY" "$WORK/bench.py" "$WORK/bench-config.json" --out-dir "$WORK/results"
"""

_COMPILE = """s3 cp --only-show-errors "s3://$BUCKET/@compile_script_key" "$WORK/compile.py"
s3 cp --only-show-errors "s3://$BUCKET/@compile_config_key" "$WORK/compile-config.json"
"$PY" "$WORK/compile.py" "$WORK/compile-config.json"
"""


def render(script: Script) -> str:
    """The user data for one instance; an error if it would not fit EC2's 16 KB."""
    if (script.wheel_key is None) == (script.package_spec is None):
        raise DeployError("user data needs exactly one of a staged wheel or a pip package spec")
    family = FAMILIES[script.family]
    python = family.python or f"{VENV}/bin/python"
    q = shlex.quote
    if script.wheel_key:
        wheel = script.wheel_key.rsplit("/", 1)[-1]
        fetch = f's3 cp --only-show-errors "s3://$BUCKET/{script.wheel_key}" "$WORK/{wheel}"'
        requirement = f'"$WORK/{wheel}[bench]"'
    else:
        fetch, requirement = "", q(script.package_spec or "")
    compile_step = ""
    if script.compile_config_key and script.compile_script_key:
        compile_step = _Template(_COMPILE).substitute(compile_script_key=script.compile_script_key,
                                                      compile_config_key=script.compile_config_key)
    text = "".join([
        _Template(_HEAD).substitute(run_id=script.run_id, instance_type=script.instance_type, family=script.family,
                                    max_minutes=script.max_minutes, work=WORK, region=q(script.region),
                                    bucket=q(script.bucket), python=q(python), results_prefix=script.results_prefix),
        _Template(_PYTHON[script.family]).substitute(venv=VENV),
        _Template(_INSTALL).substitute(fetch_package=fetch, requirement=requirement),
        _Template(_RUN).substitute(bench_script_key=script.bench_script_key,
                                   bench_config_key=script.bench_config_key, compile=compile_step),
    ])
    size = len(text.encode("utf-8"))
    if size > USER_DATA_LIMIT:
        raise DeployError(f"user data for {script.instance_type} is {size} bytes, over EC2's {USER_DATA_LIMIT}")
    return text

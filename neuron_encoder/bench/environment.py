"""What machine and software produced a result, recorded next to the numbers.

A number without its instance type, SDK versions and commit cannot be compared or repeated;
Neuron in particular needs compiler and runtime versions to match, so they are recorded here.
"""

from __future__ import annotations

import http.client
import logging
import os
import platform
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuron_encoder import hardware
from neuron_encoder.errors import ConfigError

logger = logging.getLogger(__name__)

IMDS_URL = "http://169.254.169.254"
IMDS_TIMEOUT_S = 0.3
NO_IMDS_ENV = "NEURON_ENCODER_NO_IMDS"
PACKAGES = ("torch", "torch-neuronx", "neuronx-cc", "transformers", "onnxruntime", "neuron-encoder")

Opener = Callable[..., Any]  # urllib's OpenerDirector.open(request, timeout=...)


def _direct_opener() -> Opener:
    # The metadata service is link-local: an HTTP(S)_PROXY from the environment must not be used.
    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def ec2_metadata(
    opener: Opener | None = None, base_url: str = IMDS_URL, timeout_s: float = IMDS_TIMEOUT_S
) -> dict[str, str | None]:
    """{instance_type, region} from EC2's metadata service (IMDSv2), or Nones when not on EC2.

    Off EC2 the address does not answer, so the whole probe is bounded by timeout_s.
    Set NEURON_ENCODER_NO_IMDS=1 to skip it (tests, laptops behind strict firewalls).
    """
    empty: dict[str, str | None] = {"instance_type": None, "region": None}
    if os.environ.get(NO_IMDS_ENV, "").strip() not in ("", "0"):
        return empty
    open_url = opener or _direct_opener()
    deadline = time.monotonic() + timeout_s

    def fetch(path: str, method: str = "GET", headers: dict[str, str] | None = None) -> str:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("EC2 metadata probe ran out of time")
        request = urllib.request.Request(base_url + path, method=method, headers=headers or {})
        with open_url(request, timeout=remaining) as response:
            return response.read().decode("utf-8").strip()

    try:
        token = fetch("/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        headers = {"X-aws-ec2-metadata-token": token}
        instance_type = fetch("/latest/meta-data/instance-type", headers=headers)
        region = fetch("/latest/meta-data/placement/region", headers=headers)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        logger.debug("not on EC2 or metadata unavailable: %s", exc)
        return empty
    return {"instance_type": instance_type or None, "region": region or None}


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _package_versions() -> dict[str, str | None]:
    return {name: hardware.package_version(name) for name in PACKAGES}


def _git(args: list[str], cwd: str | Path | None) -> str | None:
    """git's stdout, or None where git is missing or this is not a checkout."""
    try:
        completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout if completed.returncode == 0 else None


def _git_commit(cwd: str | Path | None = None) -> str | None:
    commit = (_git(["rev-parse", "HEAD"], cwd) or "").strip()
    return commit or None


def _git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether the checkout has uncommitted or untracked files: then the commit alone does not say what ran."""
    status = _git(["status", "--porcelain"], cwd)
    return None if status is None else bool(status.strip())


def _neuron_cores() -> int | None:
    """The NeuronCores this process may use; None where they cannot be counted (a load there says why):
    a record is never lost over it."""
    try:
        return hardware.neuron_core_count()
    except ConfigError as error:
        logger.warning("NeuronCores not recorded: %s", error)
        return None


def collect_environment(command: str, artifact_manifest_sha256: str | None = None) -> dict[str, Any]:
    """Everything a reader needs to trust or repeat a result: machine, devices, versions, commit."""
    metadata = ec2_metadata()
    source = Path(hardware.__file__).resolve().parent
    return {
        # IMDS can be unreachable (containers, hop limit 1); the DMI name needs no network.
        "instance_type": metadata["instance_type"] or hardware.ec2_instance_type(),
        "region": metadata["region"],
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpu_model": hardware.cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": hardware.cuda_devices(),
        "neuron_devices": hardware.neuron_device_count(),
        "neuron_cores": _neuron_cores(),
        "neuron_sdk": hardware.neuron_sdk_problem() or "available",
        "python": platform.python_version(),
        "packages": _package_versions(),
        # The commit of the code that ran (a source checkout), not of wherever the command ran from.
        "git_commit": _git_commit(source),
        "git_dirty": _git_dirty(source),
        "command": command,
        "artifact_manifest_sha256": artifact_manifest_sha256,
    }

"""Which machine image each instance family boots, found through AWS's SSM public parameters.

AMI ids differ per region and change every release, so we never hard-code one: AWS publishes the
latest id of each image under a public SSM parameter. Those paths are renamed as releases roll
(Neuron dropped torch-neuronx from its DLAMIs in SDK 2.32), so every path is configurable and a
missing one is an error that names it and the way out (`--ami`, or another path).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import platforms
from ..errors import ConfigError, DeployError
from .aws import Aws, AwsCallError


@dataclass(frozen=True)
class Family:
    """An image for a kind of instance and an architecture: its SSM parameter and the Python that runs our
    package on it."""

    name: str  # neuron | gpu | cpu | cpu-arm64
    ami_parameter: str
    python: str  # the image's own interpreter (a venv whose torch we must keep), or "" to make one
    arch: str = "x86_64"  # as EC2's describe_images writes it


# Neuron: the PyTorch 2.9 DLAMI and its venv (aws-neuron-sdk deploy/environments/dlami.rst). Its
# "latest" is the last PyTorch DLAMI that ships torch-neuronx: SDK 2.32 DLAMIs no longer include it
# (setup/pytorch/update-dlami.rst, v2.32.0), so an SDK >= 2.32 image needs --ami with an older one.
# GPU: /aws/service/deeplearning/ami/<arch>/<DLAMI name without "Deep Learning AMI">/latest/ami-id
# (docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html); its PyTorch is /opt/pytorch/bin/python
# (DLAMI release notes, "python_location"). CPU: Amazon Linux 2023, which has no Python >= 3.10 by
# default, so the user data installs python3.12 and makes a venv (moto ships this parameter too); Graviton
# (arm64) types get its arm64 build. AWS publishes no arm64 Neuron image (Neuron is x86_64 only), and this
# tool names no arm64 GPU image (g5g): those are refused before anything is created.
FAMILIES = {
    "neuron": Family("neuron", "/aws/service/neuron/dlami/pytorch-2.9/ubuntu-24.04/latest/image_id",
                     "/opt/aws_neuronx_venv_pytorch_2_9/bin/python"),
    "gpu": Family("gpu", "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/"
                         "latest/ami-id", "/opt/pytorch/bin/python"),
    "cpu": Family("cpu", "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64", ""),
    "cpu-arm64": Family("cpu-arm64", "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64", "",
                        "arm64"),
}


def family_of(instance_type: str) -> str:
    """inf2.xlarge -> neuron, g5.xlarge -> gpu, c7i.xlarge -> cpu (the platform table); an unparsable name
    is an error."""
    found = platforms.family(instance_type)
    if found is None or instance_type.startswith("ml."):
        raise ConfigError(f"{instance_type!r} is not an EC2 instance type (expected e.g. inf2.xlarge)")
    return found.kind


def image_of(instance_type: str) -> str:
    """The FAMILIES entry an instance type boots: its kind, for arm64 types the kind's arm64 image; a kind
    with no arm64 image here is a ConfigError saying why."""
    kind, arch = family_of(instance_type), platforms.family(instance_type).arch
    name = kind if arch == "x86_64" else f"{kind}-{arch}"
    if name not in FAMILIES:
        raise ConfigError(f"{instance_type} is an {arch} (Graviton) type, and no {arch} {kind} image is known here "
                          f"(the {kind} image, {FAMILIES[kind].ami_parameter}, is x86_64): pick an x86_64 type, "
                          f"such as {'g5.xlarge' if kind == 'gpu' else 'inf2.xlarge'}")
    return name


def parse_ami_overrides(value: str | None) -> dict[str, str]:
    """--ami ami-123 (every family) or --ami neuron=ami-1,gpu=ami-2 -> {family: ami id}."""
    if not value:
        return {}
    if "=" not in value:
        return {name: value.strip() for name in FAMILIES}
    overrides = {}
    for entry in value.split(","):
        name, _, ami = entry.partition("=")
        if name.strip() not in FAMILIES or not ami.strip():
            raise ConfigError(f"--ami entry {entry!r}: expected FAMILY=AMI_ID with FAMILY one of {sorted(FAMILIES)}")
        overrides[name.strip()] = ami.strip()
    return overrides


def check_architecture(image_id: str, architecture: str | None, name: str) -> None:
    """An image of another architecture than its entry's (an x86_64 --ami for cpu-arm64) boots none of its types."""
    wanted = FAMILIES[name].arch
    if architecture and architecture != wanted:
        raise ConfigError(f"AMI {image_id} is {architecture}, and the {name} image must be {wanted}: pass "
                          f"--ami {name}=ami-... with an {wanted} AMI")


def resolve_ami(aws: Aws, family: str, parameter: str | None = None) -> str:
    """The AMI id behind a family's SSM parameter (or `parameter`, to follow a renamed path)."""
    name = parameter or FAMILIES[family].ami_parameter
    listing = "/".join(name.split("/")[:4]) or "/"
    try:
        response = aws.call("ssm", "get_parameter", {"Name": name}, read_only=True)
    except AwsCallError as exc:
        if exc.code != "ParameterNotFound":
            raise
        raise DeployError(f"SSM parameter {name} ({family} image) does not exist in {aws.region}: AWS renames "
                          f"these as releases roll; pass --ami ami-... (or {family}=ami-...), or set "
                          f"ami_parameters.{family} in the fleet config to a current path (list them: aws ssm "
                          f"get-parameters-by-path --path {listing} --recursive --query 'Parameters[].Name')") from None
    return response["Parameter"]["Value"]

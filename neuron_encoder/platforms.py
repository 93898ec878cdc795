"""The platform table: what each EC2 instance family is, and what each Neuron SDK release ships.

Every other module asks here (hardware's probes, the Neuron backend's checks, the deploy images, the
SageMaker version check, scripts/neuron-check.sh): one place to update when AWS ships a family or a
release. It is plain data and imports nothing of this package, so a shell script can ask it with a
bare `python3 neuron_encoder/platforms.py pins 2.32` before any venv exists. Unknown names answer
None; the asker decides whether that is an error and says so in its own words.
Sources are paths in aws-neuron/aws-neuron-sdk unless named otherwise.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A neuronx-cc --target: its NeuronCore generation and physical cores per device (chip)."""

    name: str
    generation: str
    physical_cores: int
    has_lnc: bool  # the logical NeuronCore config exists (trn2 and later); elsewhere only LNC=1


# about-neuron/arch/neuron-hardware/{inferentia2,trainium,trainium2}.rst; logical-neuroncore-config.rst.
# Code runs only on the generation it was compiled for (optimum-neuron's export guide).
TARGETS = {
    "inf2": Target("inf2", "NeuronCore-v2", 2, False),
    "trn1": Target("trn1", "NeuronCore-v2", 2, False),
    "trn1n": Target("trn1n", "NeuronCore-v2", 2, False),
    "trn2": Target("trn2", "NeuronCore-v3", 8, True),
}
DEFAULT_LNC = 2  # trn2's default logical NeuronCore config
# (code's target, host's target) beyond the same target that AWS documents: trn1 code is safe on inf2
# (aws-neuron-sdk issue #865); trn1 NEFFs run on trn2 when the runtime (2.25+) is started with
# NEURON_RT_ALLOW_LEGACY_NEFF=TRUE (neuron-runtime/guides/configuration-guide.rst).
DOCUMENTED_SAFE = frozenset({("trn1", "inf2"), ("trn1n", "inf2")})
LEGACY_NEFF = frozenset({("trn1", "trn2"), ("trn1n", "trn2")})


@dataclass(frozen=True)
class Family:
    """An EC2 instance family: which image and benchmark it gets (kind), its CPU architecture, and for
    Neuron families the neuronx-cc target that runs on it (the default --target there)."""

    name: str  # c7g, inf2, trn2u, ...
    kind: str  # neuron | gpu | cpu
    arch: str  # x86_64 | arm64
    quota_class: str  # the EC2 vCPU quota its instances count against: Inf, Trn, G and VT, P or Standard
    target: str | None = None


# EC2 family -> neuronx-cc target (trn2u/trn2n: trn2's UltraServer and network variants).
NEURON_FAMILIES = {"inf2": "inf2", "trn1": "trn1", "trn1n": "trn1n", "trn2": "trn2", "trn2u": "trn2", "trn2n": "trn2"}
_NEURON_PREFIXES = ("inf", "trn")  # inf1 (NeuronCore-v1, torch-neuron) is a Neuron family with no target here
_GPU_PREFIXES = ("g", "gr", "p")  # gr6: g6 with more memory per GPU
# Instance type naming (docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html): the letters
# after the generation are attributes, "g" among them meaning AWS Graviton (arm64): c7g, c7gn, g5g, x2gd,
# im4gn, is4gen. a1 is the first Graviton, from before that convention.
_INSTANCE_TYPE = re.compile(r"^(?:ml\.)?(?P<family>(?P<prefix>[a-z]+)\d+(?P<attributes>[a-z-]*))\.[a-z0-9]+$")
_ARM64_FAMILIES = ("a1",)
# The vCPU quota class of a family, by its leading letters (Service Quotas, service "ec2"); others: Standard.
_QUOTA_CLASSES = {"inf": "Inf", "trn": "Trn", "g": "G and VT", "vt": "G and VT", "p": "P"}

# Neuron devices (chips) per instance type (the Neuron instance pages; inf2.24xlarge: 6 chips, 12 cores).
NEURON_DEVICES = {"inf2.xlarge": 1, "inf2.8xlarge": 1, "inf2.24xlarge": 6, "inf2.48xlarge": 12,
                  "trn1.2xlarge": 1, "trn1.32xlarge": 16, "trn1n.32xlarge": 16,
                  "trn2.3xlarge": 1, "trn2.48xlarge": 16, "trn2u.48xlarge": 16}


def family(instance_type: str) -> Family | None:
    """inf2.xlarge (or ml.inf2.xlarge) -> its Family; None for a name that is not an instance type."""
    match = _INSTANCE_TYPE.match(instance_type)
    if not match:
        return None
    name, prefix = match["family"], match["prefix"]
    arch = "arm64" if "g" in match["attributes"] or name in _ARM64_FAMILIES else "x86_64"
    quota = next((label for key, label in _QUOTA_CLASSES.items() if prefix.startswith(key)), "Standard")
    if prefix in _NEURON_PREFIXES:
        return Family(name, "neuron", arch, quota, NEURON_FAMILIES.get(name))
    return Family(name, "gpu" if prefix in _GPU_PREFIXES else "cpu", arch, quota)


def target_of(instance_type: str) -> str | None:
    """The neuronx-cc target that runs on `instance_type` (trn2u.48xlarge -> trn2); None off Neuron."""
    found = family(instance_type)
    return found.target if found else None


def cores_per_device(target: str, lnc: int = DEFAULT_LNC) -> int:
    """Logical NeuronCores per device as the runtime counts them: trn2 shows 8 // LNC, inf2/trn1 2."""
    spec = TARGETS[target]
    return spec.physical_cores // lnc if spec.has_lnc else spec.physical_cores


def instance_cores(instance_type: str, lnc: int = DEFAULT_LNC) -> int | None:
    """Logical NeuronCores of a Neuron instance type (ml. prefix allowed); None where the table has no count."""
    bare = instance_type.removeprefix("ml.")
    target = target_of(bare)
    devices = NEURON_DEVICES.get(bare)
    return devices * cores_per_device(target, lnc) if target and devices else None


def same_generation(first: str, second: str) -> bool:
    return TARGETS[first].generation == TARGETS[second].generation


@dataclass(frozen=True)
class Release:
    """What one Neuron SDK release ships for the torch_neuronx.trace path."""

    version: str
    neuronx_cc: str
    torch_neuronx: str
    runtime: str | None  # the runtime library in its DLC (None: not recorded here)
    dlami_venv: str | None  # the PyTorch DLAMI's torch-neuronx venv; None: its DLAMIs have none
    container_tags: tuple[str, ...]  # pytorch-inference-neuronx tags (SageMaker), newest last

    @property
    def pins(self) -> str:
        return f"neuronx-cc=={self.neuronx_cc} torch-neuronx=={self.torch_neuronx}"


# 2.31: setup/pytorch/update-dlami.rst pairs this torch-neuronx with the 2.31 compiler; its DLC (tags
# ...-sdk2.31.0-... and ...-sdk2.31.1-..., aws-neuron/deep-learning-containers) ships that compiler and
# runtime 2.33.10; its "Deep Learning AMI Neuron PyTorch 2.9" has the venv (deploy/environments/dlami.rst).
# 2.32: setup/pytorch/manual.rst's pair (the 2.32 compiler, the last torch-neuronx); no torch-neuronx
# venv in its DLAMIs and no torch-neuronx DLC (release-notes/components/dlamis.rst).
RELEASES = {
    "2.31": Release("2.31", "2.26.6360.0", "2.9.0.2.15.32035", "2.33.10", "/opt/aws_neuronx_venv_pytorch_2_9",
                    ("2.9.0-neuronx-py312-sdk2.31.0-ubuntu24.04", "2.9.0-neuronx-py312-sdk2.31.1-ubuntu24.04")),
    "2.32": Release("2.32", "2.27.5334.0", "2.9.0.2.15.32035", None, None, ()),
}
LATEST = "2.32"  # what a fresh venv gets (the setup guide's pair)
SAGEMAKER = "2.31"  # the last release with a torch-neuronx container: SageMaker-bound artifacts compile with it
PIP_REPOSITORY = "https://pip.repos.neuron.amazonaws.com"
PYTHONS = ("3.11", "3.12", "3.13")  # torch-neuronx's Pythons (setup/pytorch/manual.rst)


def release_of_sdk(sdk: str) -> Release | None:
    """The release of an SDK version as a DLC tag writes it: 2.31.1 -> 2.31."""
    return RELEASES.get(".".join(sdk.split(".")[:2]))


def pip_install(release: str, python: str = "python") -> str:
    """The command that installs `release`'s compiler and torch-neuronx pair into `python`'s environment."""
    return f"{python} -m pip install {RELEASES[release].pins} --extra-index-url={PIP_REPOSITORY}"


if __name__ == "__main__":  # `python3 neuron_encoder/platforms.py pins [RELEASE]`: for scripts/neuron-check.sh
    if len(sys.argv) not in (2, 3) or sys.argv[1] != "pins" or sys.argv[2:3] and sys.argv[2] not in RELEASES:
        sys.exit(f"usage: platforms.py pins [{'|'.join(RELEASES)}]")
    print(RELEASES[sys.argv[2] if len(sys.argv) == 3 else LATEST].pins)

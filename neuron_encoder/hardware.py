"""Every probe of what this machine has (Neuron devices and SDK, CUDA, the CPU), one place, cached;
and the one auto policy everything else asks: which backend, which precision.

torch_neuronx is imported here only to ask whether it imports; the neuron backend does the real work.
"""

from __future__ import annotations

import functools
import glob
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

NEURON_INSTALL_HINT = (
    "torch-neuronx is published only on AWS's Neuron pip repository (the PyPI package of that name "
    "is a placeholder). On an inf2/trn1/trn2 instance use the Neuron Deep Learning AMI's venv, e.g. "
    "`source /opt/aws_neuronx_venv_pytorch_2_9/bin/activate`, or follow the Neuron setup guide: "
    "pip install torch-neuronx neuronx-cc --extra-index-url=https://pip.repos.neuron.amazonaws.com"
)


@functools.lru_cache(maxsize=None)
def neuron_device_count() -> int:
    """Neuron devices (chips) visible as /dev/neuron* files."""
    return len(glob.glob("/dev/neuron[0-9]*"))


@functools.lru_cache(maxsize=None)
def has_neuron_devices() -> bool:
    """Device files, or a `neuron` driver line in /proc/devices (optimum-neuron's check)."""
    if neuron_device_count():
        return True
    try:
        return any(line.split()[-1:] == ["neuron"] for line in Path("/proc/devices").read_text().splitlines())
    except OSError:
        return False


def neuron_sdk_problem() -> str | None:
    """None when torch_neuronx imports; otherwise why not (not cached: tests install a double)."""
    if importlib.util.find_spec("torch_neuronx") is None:
        return "torch_neuronx is not installed"
    try:
        importlib.import_module("torch_neuronx")
    except ImportError as exc:  # the PyPI placeholder raises ImportError on import
        return f"torch_neuronx is installed but does not import ({exc}); it is probably PyPI's placeholder"
    return None


def is_neuron_sdk_available() -> bool:
    return neuron_sdk_problem() is None


def is_cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def cuda_bf16_supported() -> bool:
    import torch
    return is_cuda_available() and torch.cuda.is_bf16_supported()


def cuda_devices() -> dict | None:
    """The first CUDA device's name and the device count; None without a GPU or with a broken driver."""
    import torch
    try:
        if not torch.cuda.is_available():
            return None
        return {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    except Exception as exc:  # a broken driver must not lose a whole benchmark record
        logging.getLogger(__name__).warning("CUDA probe failed: %s", exc)
        return None


CORES_PER_DEVICE = 2  # inf2 and trn1 chips have 2 NeuronCores each


def neuron_core_count() -> int:
    """NeuronCores this process may use: NEURON_RT_VISIBLE_CORES, else NEURON_RT_NUM_CORES, else every
    core of the chips present. The one count the runtime, the benchmark and the records use."""
    visible = os.environ.get("NEURON_RT_VISIBLE_CORES", "").strip()
    if visible:
        return len(parse_core_list(visible))
    number = os.environ.get("NEURON_RT_NUM_CORES", "").strip()
    if number:
        try:
            return int(number)
        except ValueError:
            raise ConfigError(f"NEURON_RT_NUM_CORES={number!r} is not a number of NeuronCores") from None
    return CORES_PER_DEVICE * neuron_device_count()


def parse_core_list(text: str) -> list[int]:
    """'0-1' -> [0, 1]; '3' -> [3]; '0,2-3' -> [0, 2, 3] (NEURON_RT_VISIBLE_CORES syntax)."""
    cores: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            cores.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise ConfigError(f"NEURON_RT_VISIBLE_CORES={text!r} is not a core list like '0-1' or '3'") from None
    return cores


@functools.lru_cache(maxsize=None)
def ec2_instance_type() -> str | None:
    """The instance type EC2 Nitro writes into DMI (e.g. inf2.xlarge); None off EC2. No network."""
    try:
        name = Path("/sys/devices/virtual/dmi/id/product_name").read_text().strip()
    except OSError:
        return None
    # EC2 types look like inf2.xlarge; other vendors' DMI names ("Standard PC ...") do not.
    return name if re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9-]+", name) else None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=None)
def onednn_packs(precision: str) -> bool:
    """Whether torch's oneDNN can prepack linears in `precision` here (bf16 needs AVX512 or AVX-NE-CONVERT)."""
    import torch
    if not torch.backends.mkldnn.is_available():
        return False
    return precision == "fp32" or (precision == "bf16" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls are fast only with AVX512-BF16 or AMX; elsewhere they are emulated and slow."""
    return bool(_bf16_flags())


def describe() -> dict:
    """What the probes found, for logs, manifests and benchmark records."""
    return {
        "neuron_devices": neuron_device_count(),
        "neuron_driver": has_neuron_devices(),
        "neuron_sdk": neuron_sdk_problem() or "available",
        "cuda": is_cuda_available(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
    }


# ----------------------------------------------------------------------------- the auto policy

@dataclass(frozen=True)
class Precision:
    """What `--auto-cast auto` means for one backend: neuronx-cc's vocabulary, and why."""

    auto_cast: str  # none | matmult | all
    auto_cast_type: str
    reason: str


def auto_backend() -> tuple[str, str]:
    """(backend, why) for `--backend auto`: Neuron (devices and SDK), else CUDA, else the CPU."""
    sdk_problem = neuron_sdk_problem()
    if has_neuron_devices() and sdk_problem is None:
        return "neuron", "auto: Neuron devices and torch-neuronx are present"
    if is_cuda_available():
        return "cuda", "auto: no usable Neuron setup; a CUDA GPU is present"
    neuron = "no Neuron devices" if not has_neuron_devices() else sdk_problem
    return "cpu", f"auto: CPU ({neuron}; no CUDA GPU)"


def auto_precision(backend: str) -> Precision:
    """What `--auto-cast auto` compiles to on `backend`; the numerics gate still has the last word.

    neuron: bf16 matmuls, AWS's published setting. cuda: fp16, which every CUDA GPU runs fast.
    cpu: bf16 only where the CPU has it natively (AMX or AVX512-BF16); emulated bf16 is several
    times slower than fp32, so fp32 everywhere else.
    """
    if backend == "neuron":
        return Precision("matmult", "bf16", "auto: bf16 matmuls, as AWS's published Neuron numbers")
    if backend == "cuda":
        return Precision("matmult", "fp16", "auto: fp16 on the GPU")
    if cpu_has_fast_bf16():
        return Precision("matmult", "bf16", f"auto: bf16, this CPU has it natively ({', '.join(_bf16_flags())})")
    return Precision("none", "bf16", "auto: fp32, this CPU has no native bf16 (no AMX or AVX512-BF16)")


def _bf16_flags() -> list[str]:
    return sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())

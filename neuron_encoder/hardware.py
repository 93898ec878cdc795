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
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import platforms
from .errors import ConfigError

# Install hints from the platform table: the newest pair for a fresh venv, the SageMaker container's for
# artifacts bound for it, and the venv of the last DLAMI that has one.
TORCH_NEURONX_PIN = f"torch-neuronx=={platforms.RELEASES[platforms.LATEST].torch_neuronx}"
NEURON_VENV = platforms.RELEASES[platforms.SAGEMAKER].dlami_venv
NEURON_INSTALL_HINT = (
    "torch-neuronx is published only on AWS's Neuron pip repository (the PyPI package of that name "
    "is a placeholder). On an inf2/trn1/trn2 instance use the venv of a Neuron 2.31 (or earlier) "
    f"\"Deep Learning AMI Neuron PyTorch 2.9\": `source {NEURON_VENV}/bin/activate` (Neuron 2.32 DLAMIs "
    f"no longer ship torch-neuronx), or in a Python {', '.join(platforms.PYTHONS)} venv: "
    f"{platforms.pip_install(platforms.LATEST)} (for an artifact bound for the SageMaker container, its "
    f"compiler: {platforms.pip_install(platforms.SAGEMAKER)}); scripts/neuron-check.sh --install makes that venv"
)


@functools.lru_cache(maxsize=None)
def neuron_device_count() -> int:
    """Neuron devices (chips) this process can open: /dev/neuron* files (the documented check)."""
    return len(glob.glob("/dev/neuron[0-9]*"))


def has_neuron_devices() -> bool:
    """Device files to run on. A driver without them (a container started without --device) is not enough."""
    return neuron_device_count() > 0


@functools.lru_cache(maxsize=None)
def neuron_driver_loaded() -> bool:
    """A `neuron` line in /proc/devices: the driver is loaded on this host (optimum-neuron's check)."""
    try:
        return any(line.split()[-1:] == ["neuron"] for line in Path("/proc/devices").read_text().splitlines())
    except OSError:
        return False


def neuron_sdk_problem() -> str | None:
    """None when torch_neuronx imports and has trace(); otherwise why not (not cached: tests install a double).

    TorchNeuron, the native PyTorch backend of PyTorch 2.10+, uses the same import name without the
    ahead-of-time trace() this package compiles with (frameworks/torch/pytorch-native-overview.rst).
    """
    if importlib.util.find_spec("torch_neuronx") is None:
        return "torch_neuronx is not installed"
    try:
        module = importlib.import_module("torch_neuronx")
    except ImportError as exc:  # the PyPI placeholder raises ImportError on import
        return f"torch_neuronx is installed but does not import ({exc}); it is probably PyPI's placeholder"
    if not callable(getattr(module, "trace", None)):
        return (f"torch_neuronx {getattr(module, '__version__', '?')} has no trace(): it is TorchNeuron (native "
                f"PyTorch 2.10+), not the PyTorch/XLA torch-neuronx this package compiles with ({TORCH_NEURONX_PIN})")
    return None


def neuron_versions() -> dict[str, str | None]:
    """torch-neuronx and neuronx-cc versions, None where absent: a change calls for a recompile.

    torch_neuronx.__version__ is the documented check (setup/pytorch/manual.rst); the installed
    distribution's metadata is the fallback. neuronx-cc documents no module attribute: metadata only.
    """
    version = getattr(sys.modules["torch_neuronx"], "__version__", None) if neuron_sdk_problem() is None else None
    return {"torch-neuronx": version or package_version("torch-neuronx"),
            "neuronx-cc": package_version("neuronx-cc")}


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


NO_DEVICES_IN_CONTAINER = (
    "the Neuron driver is loaded but no /dev/neuron* device is visible: a container started without its "
    "devices; start it with --device=/dev/neuron0 (one per device, contiguous), or use the Neuron device "
    "plugin on Kubernetes")


def neuron_family() -> str | None:
    """This host's Neuron target (inf2, trn1, trn1n, trn2), from the EC2 instance type; None if unknown."""
    instance = ec2_instance_type()
    return platforms.target_of(instance) if instance else None


def logical_nc_config() -> int:
    """The LNC the runtime will use on trn2: NEURON_LOGICAL_NC_CONFIG, default 2 (1 or 2 only)."""
    text = os.environ.get("NEURON_LOGICAL_NC_CONFIG", "").strip()
    if not text:
        return platforms.DEFAULT_LNC
    if text not in ("1", "2"):
        raise ConfigError(f"NEURON_LOGICAL_NC_CONFIG={text!r}: the logical NeuronCore config is 1 or 2")
    return int(text)


def neuron_core_count() -> int:
    """NeuronCores this process may use, counted by the runtime's documented rules (neuron-runtime/guides/
    configuration-guide.rst, nrt-developer-guide.rst): NEURON_RT_VISIBLE_CORES (a contiguous range) wins;
    else NEURON_RT_NUM_CORES, where 0 means all; else every core of the devices present.

    The cores present are what `neuron-ls -j` reports (its documented nc_count per device, which knows
    trn2's LNC), else devices x the per-family table. Not the runtime's own count
    (torch.classes.neuron.Runtime().get_visible_nc_count(), an AWS sample): starting the runtime
    reserves every visible core for this process, which a probe must not do to a CPU benchmark that
    shares the host with a server. 0 when no Neuron device is visible; run_problem() says why.
    With either variable set, the count needs no neuron-ls or instance type (a SageMaker container may
    have neither): the total only checks the variables when it is known.
    """
    visible = os.environ.get("NEURON_RT_VISIBLE_CORES", "").strip()
    cores = parse_core_list(visible) if visible else None
    wanted = _requested_cores()
    devices = neuron_device_count()
    if not devices:
        return 0
    if cores is None and not wanted:
        return _cores_present(devices)
    total = _cores_present(devices, required=False)
    if total is not None and cores is not None and cores[-1] >= total:
        raise ConfigError(f"NEURON_RT_VISIBLE_CORES={visible!r} names core {cores[-1]}, but this host has "
                          f"NeuronCores 0-{total - 1}")
    if total is not None and cores is None and wanted > total:
        raise ConfigError(f"NEURON_RT_NUM_CORES={wanted}, but this host has {total} NeuronCores")
    return len(cores) if cores is not None else wanted


def _requested_cores() -> int:
    """NEURON_RT_NUM_CORES as a number; 0 (the runtime's default) means all."""
    number = os.environ.get("NEURON_RT_NUM_CORES", "").strip() or "0"
    try:
        wanted = int(number)
    except ValueError:
        raise ConfigError(f"NEURON_RT_NUM_CORES={number!r} is not a number of NeuronCores") from None
    if wanted < 0:
        raise ConfigError(f"NEURON_RT_NUM_CORES={number!r}: a number of NeuronCores is 0 (all) or more")
    return wanted


def _cores_present(devices: int, required: bool = True) -> int | None:
    """The cores of the devices present: neuron-ls, else the table; None (or, if required, an error) without both."""
    counted = neuron_ls_core_count()
    if counted:
        return counted
    family = neuron_family()
    if family is None and not required:
        return None
    if family is None:
        raise ConfigError(f"cannot count the NeuronCores of {devices} Neuron device(s): no neuron-ls "
                          "(aws-neuronx-tools) and the instance family is unknown; set NEURON_RT_NUM_CORES "
                          "or NEURON_RT_VISIBLE_CORES")
    return devices * platforms.cores_per_device(family, logical_nc_config())


@functools.lru_cache(maxsize=None)
def neuron_ls_core_count() -> int | None:
    """The sum of `neuron-ls -j`'s nc_count over devices (tools/neuron-sys-tools/neuron-ls.rst); None
    without neuron-ls or a usable answer. A separate process: it starts no runtime in this one."""
    executable = shutil.which("neuron-ls")
    if executable is None:
        return None
    try:
        done = subprocess.run([executable, "-j"], capture_output=True, text=True, timeout=30, check=True)
        return sum(int(device["nc_count"]) for device in json.loads(done.stdout)) or None
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None


def parse_core_list(text: str) -> list[int]:
    """'0-1' -> [0, 1]; '3' -> [3]; '3-5,6' -> [3, 4, 5, 6] (NEURON_RT_VISIBLE_CORES syntax).

    The runtime takes a list, a range or both, but the result must be contiguous and in increasing
    order: '3,5,6' is refused (nrt-developer-guide.rst), so it is refused here too, before any load.
    """
    cores: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            cores.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise ConfigError(f"NEURON_RT_VISIBLE_CORES={text!r} is not a core list like '0-1' or '3'") from None
    if not cores or cores != list(range(cores[0], cores[0] + len(cores))):
        raise ConfigError(f"NEURON_RT_VISIBLE_CORES={text!r} is not contiguous: the Neuron runtime needs one "
                          f"increasing range, e.g. '{cores[0] if cores else 0}-{max(cores, default=0)}'")
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


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls are fast only with AVX512-BF16 or AMX; elsewhere they are emulated and slow."""
    return bool(_bf16_flags())


def describe() -> dict:
    """What the probes found, for logs, manifests and benchmark records."""
    return {
        "neuron_devices": neuron_device_count(),
        "neuron_driver": neuron_driver_loaded(),
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
    neuron = sdk_problem if has_neuron_devices() else (
        "no Neuron devices" + (" (a driver but no /dev/neuron*: a container without its devices)"
                               if neuron_driver_loaded() else ""))
    return "cpu", f"auto: CPU ({neuron}; no CUDA GPU)"


def auto_precision(backend: str) -> Precision:
    """What `--auto-cast auto` compiles to on `backend`; the numerics gate still has the last word.

    neuron: bf16 matmuls, AWS's published setting. cuda: fp16, which every CUDA GPU runs fast.
    cpu: NEURON_ENCODER_CPU_PRECISION when it names one; else bf16 only where the CPU has it natively
    (AMX or AVX512-BF16): emulated bf16 is several times slower than fp32, so fp32 everywhere else.
    """
    if backend == "neuron":
        return Precision("matmult", "bf16", "auto: bf16 matmuls, as AWS's published Neuron numbers")
    if backend == "cuda":
        return Precision("matmult", "fp16", "auto: fp16 on the GPU")
    chosen = cpu_precision_override()
    if chosen == "fp32":
        return Precision("none", "bf16", f"auto: fp32 ({CPU_PRECISION_VARIABLE})")
    if chosen == "bf16":
        if not cpu_has_fast_bf16():
            _warn_emulated_bf16()
        return Precision("matmult", "bf16", f"auto: bf16 ({CPU_PRECISION_VARIABLE})")
    if cpu_has_fast_bf16():
        return Precision("matmult", "bf16", f"auto: bf16, this CPU has it natively ({', '.join(_bf16_flags())})")
    return Precision("none", "bf16", "auto: fp32, this CPU has no native bf16 (no AMX or AVX512-BF16)")


# The one override of the CPU's auto precision, for users (exact fp32 on an AMX host; bf16 where a VM
# hides the CPU's flags) and for the test suite, which runs under each value whatever the host.
CPU_PRECISION_VARIABLE = "NEURON_ENCODER_CPU_PRECISION"
CPU_PRECISIONS = ("auto", "fp32", "bf16")


def cpu_precision_override() -> str | None:
    """fp32 or bf16 as NEURON_ENCODER_CPU_PRECISION says; None for auto or unset (decide by the flags)."""
    text = os.environ.get(CPU_PRECISION_VARIABLE, "").strip().lower()
    if text not in CPU_PRECISIONS + ("",):
        raise ConfigError(f"{CPU_PRECISION_VARIABLE}={os.environ[CPU_PRECISION_VARIABLE]!r}: "
                          f"use one of {', '.join(CPU_PRECISIONS)}")
    return None if text in ("", "auto") else text


@functools.lru_cache(maxsize=1)
def _warn_emulated_bf16() -> None:
    """Once per process: the user asked for bf16 on a CPU that emulates it (correct, but slow)."""
    logging.getLogger(__name__).warning(
        "%s=bf16 on a CPU without native bf16 (no AMX or AVX512-BF16): correct, but emulated and several "
        "times slower than fp32", CPU_PRECISION_VARIABLE)


def _bf16_flags() -> list[str]:
    return sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())

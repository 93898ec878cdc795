"""One module per target; `get_backend` and `select_backend` are the only ways in."""

from __future__ import annotations

import logging

from .. import hardware
from ..errors import BackendUnavailable, ConfigError
from .base import AUTO_CAST_TYPES, AUTO_CASTS, TARGETS, Backend, CompileOptions, Runner

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpu", "cuda", "neuron")

__all__ = ["AUTO_CASTS", "AUTO_CAST_TYPES", "BACKENDS", "TARGETS", "Backend", "CompileOptions", "Runner",
           "get_backend", "select_backend"]


def get_backend(name: str) -> Backend:
    if name == "cpu":
        from .cpu import CpuBackend
        return CpuBackend()
    if name == "cuda":
        from .cuda import CudaBackend
        return CudaBackend()
    if name == "neuron":
        from .neuron import NeuronBackend
        return NeuronBackend()
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def select_backend(name: str, options: CompileOptions) -> tuple[Backend, str]:
    """The backend to use and why. `auto` prefers Neuron (devices and SDK), then CUDA, then CPU.

    An explicit backend that cannot work here is an error with instructions, never a silent fallback.
    """
    if name == "auto":
        sdk_problem = hardware.neuron_sdk_problem()
        if hardware.has_neuron_devices() and sdk_problem is None:
            reason = "auto: Neuron devices and torch-neuronx are present"
            chosen = "neuron"
        elif hardware.is_cuda_available():
            reason = "auto: no usable Neuron setup; a CUDA GPU is present"
            chosen = "cuda"
        else:
            neuron = ("no Neuron devices" if not hardware.has_neuron_devices() else sdk_problem)
            reason = f"auto: CPU ({neuron}; no CUDA GPU)"
            chosen = "cpu"
        log.info("backend %s", reason)
        return get_backend(chosen), reason
    backend = get_backend(name)
    problem = backend.unavailable_reason(options)
    if problem:
        raise BackendUnavailable(f"backend {name!r} is not usable here: {problem}")
    return backend, f"{name}: asked for"

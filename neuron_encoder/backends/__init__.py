"""One module per target; `get_backend` and `select_backend` are the only ways in."""

from __future__ import annotations

import logging

from .. import hardware
from ..errors import BackendUnavailable, ConfigError
from .base import AUTO_CAST_TYPES, AUTO_CASTS, TARGETS, Backend, BucketModel, CompileOptions, LoadedBucket

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpu", "cuda", "neuron")

__all__ = ["AUTO_CASTS", "AUTO_CAST_TYPES", "BACKENDS", "TARGETS", "Backend", "BucketModel", "CompileOptions",
           "LoadedBucket", "get_backend", "resolve_precision", "select_backend"]


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


def resolve_precision(backend: str, options: CompileOptions) -> tuple[CompileOptions, str | None]:
    """`options` with auto_cast="auto" replaced by hardware's policy for `backend`, and why (None when
    the user chose the precision)."""
    if options.auto_cast != "auto":
        return options, None
    policy = hardware.auto_precision(backend)
    return options.replace(auto_cast=policy.auto_cast, auto_cast_type=policy.auto_cast_type), policy.reason


def select_backend(name: str, options: CompileOptions) -> tuple[Backend, CompileOptions, str]:
    """The backend to use, the options with any `auto` and anything inferred (a Neuron target) resolved,
    and why.

    `auto` follows hardware.auto_backend (Neuron, then CUDA, then CPU). An explicit backend that
    cannot work here is an error with instructions, never a silent fallback.
    """
    if name == "auto":
        name, reason = hardware.auto_backend()
        log.info("backend %s", reason)
    else:
        get_backend(name)  # an unknown name fails before the probes run
        reason = f"{name}: asked for"
    backend = get_backend(name)
    options, why_precision = resolve_precision(name, options)
    problem = backend.unavailable_reason(options)
    if problem:
        raise BackendUnavailable(f"backend {name!r} is not usable here: {problem}")
    return backend, backend.resolve_options(options), reason + (f"; {why_precision}" if why_precision else "")

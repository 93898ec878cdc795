"""AWS Inferentia2 / Trainium through torch_neuronx.trace, coded to the documented API (NEURON.md).

torch_neuronx is imported only inside these functions: it exists only in AWS's Neuron venvs.
"""

from __future__ import annotations

import gc
import itertools
import os
from pathlib import Path

import torch

from .. import hardware
from ..errors import CompileError, ConfigError
from .base import TARGETS, Backend, CompileOptions, LoadedBucket


def compiler_args(options: CompileOptions, target: str) -> list[str]:
    """neuronx-cc flags, always explicit: the compiler's auto-cast default changed in Neuron 2.27."""
    if options.auto_cast == "auto":
        raise ValueError("auto-cast 'auto' must be resolved (backends.resolve_precision) before compiling")
    args = ["--target", target, "--model-type", "transformer", "--auto-cast", options.auto_cast]
    if options.auto_cast != "none":
        args += ["--auto-cast-type", options.auto_cast_type]
    args += ["--optlevel", str(options.optlevel)]
    return args + list(options.extra_args)


def resolve_target(options: CompileOptions) -> str:
    """--target, else NEURON_PLATFORM_TARGET_OVERRIDE, else this instance's family (inf2.xlarge -> inf2)."""
    if options.target:
        return options.target
    override = os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE")
    if override in TARGETS:
        return override
    family = (hardware.ec2_instance_type() or "").split(".")[0]
    if family in TARGETS:
        return family
    raise ConfigError("cannot tell which Neuron target to compile for: pass --target inf2|trn1|trn1n|trn2")


class NeuronBackend(Backend):
    name = "neuron"

    def unavailable_reason(self, options: CompileOptions) -> str | None:
        problem = hardware.neuron_sdk_problem()
        if problem:
            return f"{problem}. {hardware.NEURON_INSTALL_HINT}"
        if not hardware.has_neuron_devices() and options.target is None:
            return ("no Neuron devices on this host: to cross-compile here, "
                    "pass --target inf2|trn1|trn1n|trn2")
        return None

    def run_problem(self) -> str | None:
        problem = hardware.neuron_sdk_problem()
        if problem:
            return f"{problem}. {hardware.NEURON_INSTALL_HINT}"
        if not hardware.has_neuron_devices():
            return ("no Neuron devices (/dev/neuron*): Neuron models run only on an inf2/trn1/trn2 instance "
                    "(compile elsewhere with --target, run there)")
        return None

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, workdir: Path) -> torch.nn.Module:
        import torch_neuronx
        cross_compile = not hardware.has_neuron_devices()  # a build host: trace for the target, run later
        workdir.mkdir(parents=True, exist_ok=True)
        written_out = model.with_fused_attention(False)  # the attention form neuronx-cc lowers
        try:
            return torch_neuronx.trace(written_out, example, compiler_workdir=str(workdir),
                                       compiler_args=self.compiler_args(options), cpu_backend=cross_compile)
        except RuntimeError as exc:
            hint = (" (exit -9: the host ran out of memory; use a larger build host or fewer buckets)"
                    if "-9" in str(exc) else "")
            raise CompileError(f"neuronx-cc failed{hint}: {exc}; logs in {workdir}") from exc

    def load(self, path: Path, precision: str, replicas: int = 1) -> ReplicaPool:
        import torch_neuronx  # noqa: F401 - registers the Neuron ops that torch.jit.load needs
        # Each load lands on the next free NeuronCore (of NEURON_RT_VISIBLE_CORES).
        return ReplicaPool([torch.jit.load(str(path)) for _ in range(max(1, replicas))])

    def target(self, options: CompileOptions) -> str:
        return resolve_target(options)

    def compiler_args(self, options: CompileOptions) -> list[str]:
        return compiler_args(options, resolve_target(options))

    def versions(self) -> dict[str, str | None]:
        return {"torch-neuronx": hardware.package_version("torch-neuronx"),
                "neuronx-cc": hardware.package_version("neuronx-cc")}


class ReplicaPool(LoadedBucket):
    """One loaded copy per NeuronCore; successive calls go round robin over them.

    A single caller uses one core at a time, so throughput needs >= 2 calling threads per core (the
    benchmark's workers, the server's batcher). Unlike DataParallel, a batch-1 request never waits for
    a batch split, and concurrent batch-1 requests run on different cores. close() drops every copy,
    which frees its NeuronCore.
    """

    def __init__(self, copies: list[torch.nn.Module]) -> None:
        super().__init__(copies[0])
        self.copies = copies
        self._turn = itertools.count()  # next() on a count is atomic under the GIL

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        copies = self.copies
        if len(copies) == 1:
            return copies[0](*inputs)
        return copies[next(self._turn) % len(copies)](*inputs)

    def close(self) -> None:
        super().close()
        self.copies = [self.module]  # the closed stand-in: calls fail, the models are gone
        gc.collect()  # a loaded Neuron model releases its core when it is collected

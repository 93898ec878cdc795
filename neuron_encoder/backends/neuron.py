"""AWS Inferentia2 / Trainium through torch_neuronx.trace, coded to the documented API (NEURON.md).

torch_neuronx is imported only inside these functions: it exists only in AWS's Neuron venvs.
Sources are named where each fact is used: paths are in the aws-neuron/aws-neuron-sdk repository.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from .. import hardware, platforms
from ..errors import ArtifactError, BackendUnavailable, CompileError, ConfigError
from .base import TARGETS, Backend, CompileOptions, LoadedBucket

LEGACY_NEFF = "NEURON_RT_ALLOW_LEGACY_NEFF"  # the runtime's switch for platforms.LEGACY_NEFF pairs
# neuronx-cc's spellings of the logical NeuronCore config (compiler/neuronx-cc/api-reference-guide/index.rst
# names the first two; error code EARG001's example uses --lnc).
LNC_FLAGS = ("--logical-nc-config", "-lnc", "--lnc")
# Neuron 2.27 made --auto-cast none and mixed-precision accumulation the compiler's defaults; its release
# notes restore the earlier behaviour, which AWS's published inf2 BERT numbers were measured with (the
# batch-1 row with Neuron 2.26), with --auto-cast matmult and this flag (release-notes/prev/2.27.0/compiler.rst).
PUBLISHED_ARGS = ("--disable-mixed-precision-accumulation",)
COMPILER_LOG = "log-neuron-cc.txt"  # neuronx-cc's --logfile default name
COMPILER_COMMAND = "command.txt"  # what torch_neuronx.trace writes beside the NEFF in compiler_workdir
# The placement contexts are not thread-safe (api-torch-neuronx-core-placement.rst): one load at a time.
_PLACEMENT_LOCK = threading.Lock()


def compiler_args(options: CompileOptions, target: str) -> list[str]:
    """neuronx-cc flags, always explicit: the compiler's auto-cast default changed in Neuron 2.27."""
    if options.auto_cast == "auto":
        raise ValueError("auto-cast 'auto' must be resolved (backends.resolve_precision) before compiling")
    check_lnc(options, target)
    args = ["--target", target, "--model-type", "transformer", "--auto-cast", options.auto_cast]
    if options.auto_cast != "none":
        args += ["--auto-cast-type", options.auto_cast_type]
    if options.lnc is not None:
        args += ["--logical-nc-config", str(options.lnc)]
    args += ["--optlevel", str(options.optlevel)]
    return args + list(options.extra_args)


def check_lnc(options: CompileOptions, target: str) -> None:
    """--lnc 2 only for trn2: EARG001 is the compiler's error for it on inf2/trn1, where lnc=1, the only
    config those cores have, is accepted (compiler/error-codes/EARG001.rst)."""
    named = [arg for arg in options.extra_args if arg.split("=", 1)[0] in LNC_FLAGS]
    if named:
        raise ConfigError(f"pass the logical NeuronCore config as --lnc 1|2, not {named[0]} in the compiler "
                          "args: the artifact records --lnc and checks it against the runtime at load")
    if options.lnc not in (None, 1) and not platforms.TARGETS[target].has_lnc:
        raise ConfigError(f"--lnc {options.lnc} is for trn2 only (neuronx-cc --logical-nc-config; error EARG001 "
                          f"elsewhere): a {target} NeuronCore is not split into logical cores; drop --lnc "
                          "or pass --lnc 1")


def published_options(options: CompileOptions) -> CompileOptions:
    """`options` as AWS measured its published numbers when they leave the precision to auto:
    bf16 matmuls without mixed-precision accumulation (PUBLISHED_ARGS)."""
    if options.auto_cast != "auto":
        return options
    return options.replace(auto_cast="matmult", auto_cast_type="bf16",
                           extra_args=(*options.extra_args, *PUBLISHED_ARGS))


def resolve_target(options: CompileOptions) -> str:
    """--target, else NEURON_PLATFORM_TARGET_OVERRIDE, else this instance's family (inf2.xlarge -> inf2)."""
    if options.target:
        return options.target
    override = os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE")
    if override in TARGETS:
        return override
    family = hardware.neuron_family()
    if family is not None:
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
            if hardware.neuron_driver_loaded():
                return hardware.NO_DEVICES_IN_CONTAINER
            return ("no Neuron devices (/dev/neuron*): Neuron models run only on an inf2/trn1/trn2 instance "
                    "(compile elsewhere with --target, run there)")
        return None

    def can_run(self, options: CompileOptions) -> bool:
        """Devices and the SDK here, and code for this host's NeuronCore generation (_check_target)."""
        if self.run_problem() is not None:
            return False
        try:
            _check_target(resolve_target(options), hardware.neuron_family())
        except ArtifactError:
            return False
        return True

    def resolve_options(self, options: CompileOptions) -> CompileOptions:
        resolved = options.replace(target=resolve_target(options))
        check_lnc(resolved, resolved.target)
        return resolved

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, log_dir: Path) -> torch.nn.Module:
        """Trace with neuronx-cc in a temporary work directory (TMPDIR): it holds graph.hlo, a .npy copy
        of every weight and the NEFF, model-sized, so only its log and command reach `log_dir`. On a
        failure the work directory stays, and the error names it.

        trace() loads its result onto a NeuronCore unless cpu_backend=True, so code this host cannot run
        (a build host, or another generation's target on a Neuron host) is traced on the CPU backend."""
        import torch_neuronx
        cross_compile = not self.can_run(options)
        workdir = Path(tempfile.mkdtemp(prefix=f"neuron-encoder-{log_dir.name}-"))
        args = [*self.compiler_args(options), "--logfile", str(workdir / COMPILER_LOG)]  # not the process's cwd
        written_out = model.with_fused_attention(False)  # the attention form neuronx-cc lowers
        try:
            compiled = torch_neuronx.trace(written_out, example, compiler_workdir=str(workdir),
                                           compiler_args=args, cpu_backend=cross_compile)
        except RuntimeError as exc:
            hint = (" (exit -9: the host ran out of memory; use a larger build host or fewer buckets)"
                    if "-9" in str(exc) else "")
            raise CompileError(f"neuronx-cc failed{hint}: {exc}; its log and work files are in {workdir}") from exc
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in (COMPILER_LOG, COMPILER_COMMAND):
            if (workdir / name).is_file():
                shutil.copy2(workdir / name, log_dir / name)
        shutil.rmtree(workdir, ignore_errors=True)
        return compiled

    def load(self, path: Path, precision: str, replicas: int = 1, start_core: int = 0) -> ReplicaPool:
        """One copy on each NeuronCore start_core .. start_core + replicas - 1, placed at load time with the
        documented context (api-torch-neuronx-core-placement.rst), so copy i is on core i whatever else this
        process has loaded; the runtime's default, least-used placement would shift with other models."""
        import torch_neuronx  # registers the Neuron ops that torch.jit.load needs
        cores = _cores_for(replicas, start_core)
        place = _placement_context(torch_neuronx)
        copies = []
        with _PLACEMENT_LOCK:
            for core in cores:
                with place(start_nc=core, nc_count=1):  # indices are relative to the visible cores
                    copies.append(torch.jit.load(str(path)))
        return ReplicaPool(copies, cores)

    def check_artifact(self, manifest: dict[str, Any]) -> list[str]:
        target = manifest.get("target")
        notes = _check_target(target, hardware.neuron_family())
        if target in platforms.TARGETS and platforms.TARGETS[target].has_lnc:
            _check_runtime_lnc((manifest.get("options") or {}).get("lnc") or platforms.DEFAULT_LNC)
        return notes + _check_versions(manifest.get("versions") or {}, hardware.neuron_versions())

    def target(self, options: CompileOptions) -> str:
        return resolve_target(options)

    def compiler_args(self, options: CompileOptions) -> list[str]:
        return compiler_args(options, resolve_target(options))

    def versions(self) -> dict[str, str | None]:
        return hardware.neuron_versions()


def _cores_for(replicas: int, start_core: int) -> list[int]:
    """The visible NeuronCores `replicas` copies from `start_core` take; a ConfigError if they are not there."""
    if replicas < 1 or start_core < 0:
        raise ConfigError(f"replicas must be >= 1 and start_core >= 0, got replicas={replicas}, "
                          f"start_core={start_core}")
    visible = hardware.neuron_core_count()
    if start_core + replicas > visible:
        raise ConfigError(f"{replicas} cop{'y' if replicas == 1 else 'ies'} from NeuronCore {start_core} need "
                          f"cores {start_core}-{start_core + replicas - 1}, but this process sees {visible} "
                          "(NEURON_RT_VISIBLE_CORES / NEURON_RT_NUM_CORES)")
    return list(range(start_core, start_core + replicas))


def _placement_context(torch_neuronx) -> Callable[..., Any]:
    """neuron_cores_context: top level since Neuron 2.25, under torch_neuronx.experimental before (it still
    works there, with a warning: release-notes/prev/2.25.0/nx-pytorch.rst)."""
    context = getattr(torch_neuronx, "neuron_cores_context", None)
    if context is None:
        try:
            context = getattr(importlib.import_module("torch_neuronx.experimental"), "neuron_cores_context", None)
        except ImportError:
            context = None
    if context is None:
        raise BackendUnavailable(f"torch_neuronx {getattr(torch_neuronx, '__version__', '?')} has no "
                                 f"neuron_cores_context (the placement API): install {hardware.TORCH_NEURONX_PIN}")
    return context


def _check_target(target: str | None, host: str | None) -> list[str]:
    """Refuse code for another NeuronCore generation (optimum-neuron's export guide: trn2 models do not run
    on inf2, nor the reverse) unless the runtime is told to take it; warn where the families differ."""
    if target is None:
        return ["the artifact records no Neuron target: cannot check that it suits this host"]
    if host is None:
        return [f"cannot tell this host's instance family (no EC2 instance type): not checking that {target} "
                "code suits it"]
    generation, here = platforms.TARGETS[target].generation, platforms.TARGETS[host].generation
    legacy_pair = (target, host) in platforms.LEGACY_NEFF
    if legacy_pair and os.environ.get(LEGACY_NEFF, "").strip().upper() == "TRUE":
        return [f"the artifact was compiled for {target} and this host is {host}: {LEGACY_NEFF}=TRUE lets the "
                f"runtime (2.25 or later) run that code there; recompile with --target {host} for its own code"]
    if generation != here:
        legacy_hint = f", or set {LEGACY_NEFF}=TRUE (runtime 2.25+) to run {target} code here" if legacy_pair else ""
        raise ArtifactError(f"the artifact was compiled for {target} ({generation}), but this host is "
                            f"{host} ({here}): Neuron code runs only on the NeuronCore generation "
                            f"it was compiled for; recompile it with --target {host}{legacy_hint}")
    if (target, host) in platforms.DOCUMENTED_SAFE:
        return [f"the artifact was compiled for {target}, and this host is {host}: the same {here}, on which AWS "
                f"says {target} code is safe; recompile with --target {host} to be sure"]
    if target != host:
        return [f"the artifact was compiled for {target}, and this host is {host}: the same {here}, but AWS "
                f"documents only trn1 code on inf2; recompile with --target {host} to be sure"]
    return []


def _check_runtime_lnc(compiled: int) -> None:
    """The compiler's LNC must be the runtime's (logical-neuroncore-config.rst: AWS Neuron does not support
    them differing); the runtime takes it from NEURON_LOGICAL_NC_CONFIG."""
    runtime = hardware.logical_nc_config()
    if compiled != runtime:
        raise ArtifactError(f"the artifact was compiled for trn2 with LNC={compiled}, but this process's runtime "
                            f"uses LNC={runtime} (NEURON_LOGICAL_NC_CONFIG): they must match; set "
                            f"NEURON_LOGICAL_NC_CONFIG={compiled} before starting, or recompile with --lnc {runtime}")


def _check_versions(recorded: dict[str, str | None], here: dict[str, str | None]) -> list[str]:
    """Refuse a neuronx-cc of another major version; warn about any other difference.

    The compiler FAQ (compiler/neuronx-cc/faq.rst): compiler and runtime are compatible within a major
    version, else the load fails and the model must be recompiled. Python cannot read the runtime
    library's version, so this host's neuronx-cc stands in for it.
    """
    notes = []
    for name in ("neuronx-cc", "torch-neuronx"):
        then, now = recorded.get(name), here.get(name)
        if then is None or now is None:
            notes.append(f"{name}: {then or 'not recorded'} when compiled, {now or 'not installed'} here: "
                         "cannot check that the artifact suits this SDK")
        elif name == "neuronx-cc" and then.split(".")[0] != now.split(".")[0]:
            raise ArtifactError(f"the artifact was compiled with neuronx-cc {then}, and this host has {now}: "
                                "compiler and runtime must share a major version; recompile it here")
        elif then != now:
            notes.append(f"compiled with {name} {then}, this host has {now}: recompile after an SDK upgrade")
    return notes


class ReplicaPool(LoadedBucket):
    """One loaded copy per NeuronCore; successive calls go round robin over them.

    A single caller uses one core at a time, so throughput needs >= 2 calling threads per core (the
    benchmark's workers, the server's batcher). Unlike DataParallel, a batch-1 request never waits for
    a batch split, and concurrent batch-1 requests run on different cores. close() drops every copy,
    which frees its NeuronCore.
    """

    def __init__(self, copies: list[torch.nn.Module], cores: list[int]) -> None:
        super().__init__(copies[0])
        self.copies = copies
        self.cores = tuple(cores)
        self._turn = itertools.count()  # next() on a count is atomic under the GIL

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        copies = self.copies
        if len(copies) == 1:
            return copies[0](*inputs)
        return copies[next(self._turn) % len(copies)](*inputs)

    def close(self) -> None:
        super().close()
        self.copies = [self.module]  # the closed stand-in: calls fail, the models are gone
        self.cores = ()
        gc.collect()  # a loaded Neuron model releases its core when it is collected

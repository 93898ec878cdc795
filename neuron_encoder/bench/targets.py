"""The targets to benchmark for one model: the CPU fp32 eager baseline and every backend this host has.

    cpu-eager              the Encoder in PyTorch eager, fp32: the baseline and the accuracy reference
    cpu-torchscript-fp32   compile_model(backend="cpu"): a frozen TorchScript artifact
    cpu-torchscript-bf16   the same with auto-cast to bf16 (only when asked: slow without AVX512-BF16/AMX)
    cuda-fp32/fp16/bf16    the Encoder eager on the GPU in that precision, synchronised before the timer stops
    neuron-1core           compile_model(backend="neuron") loaded on one NeuronCore
    neuron-all-cores       the same artifact, one copy per visible NeuronCore, calls round robin

Families select several: `cpu` (eager + fp32 artifact), `cuda` (its three precisions), `neuron`
(both), `auto` (every family present here; absent ones are skipped and said so).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from neuron_encoder import artifact, hardware
from neuron_encoder.backends import CompileOptions, select_backend
from neuron_encoder.bench.runner import LazyTarget, Target
from neuron_encoder.compiler import CompileResult, compile_model
from neuron_encoder.errors import ArtifactError, BackendUnavailable, ConfigError
from neuron_encoder.model import Encoder
from neuron_encoder.runtime import load_compiled

Progress = Callable[[str], None]

KINDS = ("cpu-eager", "cpu-torchscript-fp32", "cpu-torchscript-bf16", "cuda-fp32", "cuda-fp16", "cuda-bf16",
         "neuron-1core", "neuron-all-cores")
FAMILIES: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu-eager", "cpu-torchscript-fp32"),
    "cuda": ("cuda-fp32", "cuda-fp16", "cuda-bf16"),
    "neuron": ("neuron-1core", "neuron-all-cores"),
}
AUTO = ("auto", "all")
# AWS's published inf2/trn1 numbers use matmult auto-cast to bf16 (NEURON.md); so does our default.
NEURON_BENCH_OPTIONS = CompileOptions(auto_cast="matmult", auto_cast_type="bf16")
_CUDA_DTYPES = {"cuda-fp32": torch.float32, "cuda-fp16": torch.float16, "cuda-bf16": torch.bfloat16}


def _family(kind: str) -> str:
    return kind.split("-", 1)[0]


def unavailable_reason(family: str) -> str | None:
    """Why a backend family cannot be benchmarked on this host, or None."""
    if family == "cuda":
        try:
            select_backend("cuda", CompileOptions())
        except BackendUnavailable as exc:
            return str(exc)
    if family == "neuron":
        problem = hardware.neuron_sdk_problem()
        if problem:
            return f"backend 'neuron' is not usable here: {problem}. {hardware.NEURON_INSTALL_HINT}"
        if not hardware.has_neuron_devices():
            return ("backend 'neuron' is not usable here: no Neuron devices (/dev/neuron*); benchmarks run "
                    "only on an inf2/trn1/trn2 instance (compile elsewhere with --target, run there)")
    return None


def resolve_backends(names: str | Sequence[str], progress: Progress | None = None) -> list[str]:
    """Backend and family names -> target kinds, in KINDS order.

    Unknown names are a ConfigError; a backend asked for by name that this host lacks is
    BackendUnavailable (with the install hint for Neuron); `auto` skips what is absent.
    """
    say = progress or (lambda message: None)
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise ConfigError("no backends to benchmark; give e.g. auto, cpu, cuda, neuron or cpu-eager")
    choices = ", ".join((*AUTO, *FAMILIES, *KINDS))
    chosen: set[str] = set()
    for name in items:
        if name in AUTO:
            for family, kinds in FAMILIES.items():
                reason = unavailable_reason(family)
                if reason:
                    say(f"auto: skipping {family}: {reason.split('. ')[0]}")
                    continue
                chosen.update(kind for kind in kinds if _kind_supported(kind))
            continue
        if name in FAMILIES:
            kinds = FAMILIES[name]
        elif name in KINDS:
            kinds = (name,)
        else:
            raise ConfigError(f"unknown backend {name!r}; choose from {choices}")
        reason = unavailable_reason(_family(kinds[0]))
        if reason:
            raise BackendUnavailable(reason)
        if name in KINDS and not _kind_supported(name):
            raise BackendUnavailable(f"backend {name!r} is not usable here: this GPU has no bf16 support")
        chosen.update(kind for kind in kinds if name in KINDS or _kind_supported(kind))
    return [kind for kind in KINDS if kind in chosen]


def _kind_supported(kind: str) -> bool:
    if kind == "cuda-bf16":
        return torch.cuda.is_bf16_supported()
    return True


def eager_target(model: Encoder, kind: str = "cpu-eager") -> Target:
    """The model in PyTorch eager: on the CPU in fp32, or on the GPU in the kind's precision."""
    if kind == "cpu-eager":
        def run(input_ids, attention_mask, token_type_ids):
            with torch.inference_mode():  # thread-local: entered in each worker's call
                return model(input_ids, attention_mask, token_type_ids)
        return Target(kind, "fp32", torch.get_num_threads(), run, label="PyTorch eager")
    if kind not in _CUDA_DTYPES:
        raise ConfigError(f"no eager target {kind!r}; eager targets are cpu-eager and {', '.join(_CUDA_DTYPES)}")
    from neuron_encoder.backends.base import WithDtype  # a copy in that precision, returning fp32
    module = WithDtype(model, _CUDA_DTYPES[kind]).cuda().eval()

    def run_cuda(input_ids, attention_mask, token_type_ids):
        with torch.inference_mode():
            hidden = module(input_ids.cuda(), attention_mask.cuda(), token_type_ids.cuda())
            torch.cuda.synchronize()  # the kernels are done before the timer stops
            return hidden.cpu()
    precision = kind.split("-", 1)[1]
    return Target(kind, precision, 1, run_cuda, label=f"PyTorch eager on {torch.cuda.get_device_name(0)}, synchronised")


def _precision(manifest: dict) -> str:
    options = manifest.get("options") or {}
    if manifest["backend"] == "neuron" and options.get("auto_cast", "none") != "none":
        return f"{options['auto_cast_type']}-{options['auto_cast']}"  # e.g. bf16-matmult, as AWS labels it
    return manifest["precision"]


def artifact_target(directory: str | Path, *, replicas: int | None = None, name: str | None = None) -> Target:
    """A compiled artifact loaded with load_compiled, named after its backend unless `name` is given."""
    compiled = load_compiled(directory, replicas=replicas)
    manifest = compiled.manifest
    backend = manifest["backend"]
    precision = _precision(manifest)
    if backend == "neuron":
        cores = replicas or hardware.visible_neuron_cores(2 * hardware.neuron_device_count())
        default_name = "neuron-1core" if cores == 1 else "neuron-all-cores"
        label = f"{cores} NeuronCore{'s (a copy per core)' if cores > 1 else ''}"
    elif backend == "cuda":
        cores, default_name, label = 1, f"cuda-torchscript-{precision}", "TorchScript artifact"
    else:
        cores, default_name, label = torch.get_num_threads(), f"cpu-torchscript-{precision}", "TorchScript artifact"
    # Hash after loading: a first load on a device records its verification in the manifest.
    return Target(name or default_name, precision, cores, compiled, artifact.manifest_hash(directory),
                  f"{label}, {Path(directory).name}")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).name or text)


def plan_targets(model: Encoder, kinds: Sequence[str], batch_sizes: Sequence[int], seq_lens: Sequence[int], *,
                 model_id: str = "model", artifacts: Sequence[str | Path] = (),
                 artifacts_dir: str | Path | None = None, neuron_options: CompileOptions = NEURON_BENCH_OPTIONS,
                 progress: Progress | None = None) -> list[Target | LazyTarget]:
    """The targets for `kinds` (from resolve_backends) plus one per existing artifact directory.

    Compiled targets are LazyTargets: compiled (or found in the compile cache) and loaded when the
    sweep reaches them. Artifacts are compiled for exactly the sweep's batch sizes and sequence
    lengths, under artifacts_dir (default: compile_model's ./artifacts), reused while the weights,
    buckets, options and versions are unchanged. Existing artifacts must hold the same weights as
    `model`, or their accuracy against it would mean nothing.
    """
    say = progress or (lambda message: None)
    weights = artifact.weights_hash(model)  # the cache key of our own compiles, and the check on given ones
    compiled: dict[tuple[str, CompileOptions], CompileResult] = {}

    def compile_for(backend: str, options: CompileOptions) -> Path:
        key = (backend, options)
        if key not in compiled:
            out = None
            if artifacts_dir is not None:
                digest = hashlib.sha256(json.dumps(
                    [weights, list(batch_sizes), list(seq_lens), backend, repr(options)]).encode()).hexdigest()
                out = Path(artifacts_dir) / f"{_safe(model_id)}-{backend}-{options.precision}-{digest[:10]}"
            common = dict(batch_sizes=batch_sizes, seq_lens=seq_lens, backend=backend, options=options,
                          progress=lambda message: say(f"compile {backend} {options.precision}: {message}"))
            try:
                compiled[key] = compile_model(model, out=out, **common)
            except ArtifactError as exc:
                if out is None:
                    raise
                say(f"{out}: {exc}; recompiling into this benchmark's own artifact directory")
                compiled[key] = compile_model(model, out=out, force=True, **common)
        return compiled[key].path

    all_cores = hardware.visible_neuron_cores(2 * hardware.neuron_device_count())
    given = _given_artifacts(artifacts, weights, model_id, all_cores)
    plans: list[Target | LazyTarget] = []
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"unknown target {kind!r}; choose from {', '.join(KINDS)}")
        if kind in given:
            continue  # the artifact the user gave replaces compiling one
        if kind == "cpu-eager":
            plans.append(eager_target(model))
        elif kind in _CUDA_DTYPES:
            plans.append(LazyTarget(kind, lambda kind=kind: eager_target(model, kind)))
        elif kind.startswith("cpu-torchscript-"):
            options = CompileOptions() if kind.endswith("fp32") else CompileOptions(auto_cast="matmult",
                                                                                     auto_cast_type="bf16")
            plans.append(LazyTarget(kind, lambda kind=kind, options=options: artifact_target(
                compile_for("cpu", options), replicas=1, name=kind)))
        elif kind == "neuron-1core":
            plans.append(LazyTarget(kind, lambda: artifact_target(
                compile_for("neuron", neuron_options), replicas=1, name="neuron-1core")))
        elif all_cores > 1:
            plans.append(LazyTarget(kind, lambda: artifact_target(
                compile_for("neuron", neuron_options), replicas=all_cores, name="neuron-all-cores")))
        else:
            say(f"skipping neuron-all-cores: this process sees {all_cores} NeuronCore (NEURON_RT_VISIBLE_CORES)")
    plans.extend(given.values())
    if not plans:
        raise ConfigError("nothing to benchmark: no backends and no artifacts")
    return plans


def _given_artifacts(directories: Sequence[str | Path], weights: str, model_id: str,
                     all_cores: int) -> dict[str, LazyTarget]:
    """Targets for existing artifact directories, by name (a Neuron artifact gives two: 1 core, all cores)."""
    given: dict[str, LazyTarget] = {}

    def add(name: str, directory: str | Path, replicas: int) -> None:
        if name in given:
            raise ConfigError(f"two artifacts would both be {name!r}; benchmark them in separate runs")
        given[name] = LazyTarget(name, lambda: artifact_target(directory, replicas=replicas, name=name))

    for directory in directories:
        manifest = artifact.read_manifest(directory)
        if manifest["model"]["weights_sha256"] != weights:
            raise ConfigError(f"{directory} was compiled from other weights than {model_id}; benchmark it with "
                              "the model it was compiled from, or its accuracy would mean nothing")
        backend = manifest["backend"]
        if backend == "neuron":
            reason = unavailable_reason("neuron")
            if reason:
                raise BackendUnavailable(reason)
            add("neuron-1core", directory, 1)
            if all_cores > 1:
                add("neuron-all-cores", directory, all_cores)
        else:
            reason = unavailable_reason(backend)
            if reason:
                raise BackendUnavailable(reason)
            add(f"{backend}-torchscript-{_precision(manifest)}", directory, 1)
    return given

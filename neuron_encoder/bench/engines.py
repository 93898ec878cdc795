"""What a benchmark times: engines, named for what they run.

    cpu-eager                   the Encoder in PyTorch eager, fp32: the baseline and the accuracy reference
    cpu-artifact-fp32/bf16      compile_model(backend="cpu"): oneDNN-prepacked linears, numerics gated
    cuda-eager-fp32/fp16/bf16   the Encoder eager on the GPU in that precision, synchronised
    cuda-artifact-fp32/fp16/bf16  compile_model(backend="cuda"): a TorchScript GPU artifact, numerics gated
    neuron-1core                compile_model(backend="neuron") loaded on one NeuronCore; with auto-cast
                                auto, compiled as AWS measured its published numbers (bf16 matmuls,
                                --disable-mixed-precision-accumulation)
    neuron-all-cores            the same artifact, one copy per visible NeuronCore, calls round robin
    cpu-onnxruntime-fp32        the same weights exported with torch.onnx, run by ONNX Runtime (bench/peers.py)
    cpu-openvino-fp32/bf16/fp16 that export compiled by OpenVINO: at fp32, and at its default for this CPU

Families select several: `cpu` (eager, the fp32 artifact, the bf16 one where the CPU has bf16
natively, and ONNX Runtime and OpenVINO where they are installed), `cpu-onnxruntime` (its fp32),
`cpu-openvino` (fp32, and its default precision here when that is another), `cuda` (eager fp32 and
fp16, the fp16 artifact, bf16 too where the GPU has it), `neuron` (both), `auto` (every family this
host can run; absent ones are skipped and said so).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from neuron_encoder import artifact, hardware
from neuron_encoder.backends import CompileOptions, get_backend
from neuron_encoder.backends.neuron import published_options
from neuron_encoder.bench import peers
from neuron_encoder.compiler import DEFAULT_ARTIFACTS_DIR, compile_model
from neuron_encoder.errors import BackendUnavailable, ConfigError
from neuron_encoder.models import ResolvedModel
from neuron_encoder.runtime import load_compiled
from neuron_encoder.threads import ThreadPlan, cpu_budget, plan_threads

Progress = Callable[[str], None]

KINDS = ("cpu-eager", "cpu-artifact-fp32", "cpu-artifact-bf16",
         "cuda-eager-fp32", "cuda-eager-fp16", "cuda-eager-bf16",
         "cuda-artifact-fp32", "cuda-artifact-fp16", "cuda-artifact-bf16",
         "neuron-1core", "neuron-all-cores",
         "cpu-onnxruntime-fp32", "cpu-openvino-fp32", "cpu-openvino-bf16", "cpu-openvino-fp16")
AUTO = ("auto", "all")
PEERS = ("onnxruntime", "openvino")  # the CPU's other runtimes (bench/peers.py)


@dataclass(frozen=True)
class Engine:
    """One thing to benchmark: a callable plus what a reader needs to know about it.

    run(input_ids, attention_mask, token_type_ids) must return a host tensor, hidden states (B, T, H) or
    pooled embeddings (B, H) (endpoints, bench/endpoints.py), and return only when the work is done; it
    may be called from several threads.
    """

    name: str  # e.g. "cpu-eager", "cpu-artifact-fp32", "cuda-eager-fp16", "neuron-1core"
    precision: str
    device: str  # cpu | cuda | neuron | http: where it computes, which decides the thread plan
    cores: int  # NeuronCores, GPUs, or CPU threads the engine uses
    run: Callable
    artifact_sha256: str | None = None  # sha256 of the artifact's manifest.json; None for eager models
    label: str = ""  # free text, e.g. "2 NeuronCores (a copy per core)"
    close: Callable[[], None] = lambda: None  # frees what the engine holds (NeuronCores, GPU memory)
    torch_threads: bool = True  # False: a runtime with its own thread pool (ONNX Runtime, OpenVINO)

    def thread_plan(self, workers: int) -> ThreadPlan | None:
        """The CPU thread split for `workers` callers (threads.py); None off the CPU or off torch's threads."""
        return plan_threads(workers) if self.device == "cpu" and self.torch_threads else None


@dataclass(frozen=True)
class LazyEngine:
    """A engine built (compiled, loaded) only when its turn in a sweep comes and closed after it, so
    one model at a time holds host memory or NeuronCores."""

    name: str
    build: Callable[[], Engine]


def peer_kinds(runtime: str) -> tuple[str, ...]:
    """A peer runtime's engines: fp32, and the precision its users get by default here when that is another."""
    if runtime == "onnxruntime":
        return ("cpu-onnxruntime-fp32",)  # its CPU provider has no bf16 or fp16 compute on x86
    default = peers.openvino_default_precision()
    return ("cpu-openvino-fp32",) + ((f"cpu-openvino-{default}",) if default != "fp32" else ())


def family_kinds(family: str) -> tuple[str, ...]:
    """The engines of a backend family on this host (on the CPU: bf16 where the auto policy picks it, and
    the peers that are installed)."""
    if family == "cpu":
        bf16 = hardware.auto_precision("cpu").auto_cast != "none"
        ours = ("cpu-eager", "cpu-artifact-fp32") + (("cpu-artifact-bf16",) if bf16 else ())
        return ours + tuple(kind for runtime in PEERS if not peers.missing(runtime) for kind in peer_kinds(runtime))
    if family == "cuda":
        bf16 = ("cuda-eager-bf16", "cuda-artifact-bf16") if hardware.cuda_bf16_supported() else ()
        return ("cuda-eager-fp32", "cuda-eager-fp16", "cuda-artifact-fp16") + bf16
    return ("neuron-1core", "neuron-all-cores")


FAMILIES = ("cpu", "cuda", "neuron")
GROUPS = tuple(f"cpu-{runtime}" for runtime in PEERS)  # a peer runtime's engines, by its name


def resolve_engines(names: str | Sequence[str], progress: Progress | None = None) -> list[str]:
    """Engine and family names -> engine kinds, in KINDS order.

    Unknown names are a ConfigError; a engine asked for by name that this host cannot run is
    BackendUnavailable (the backend says why); `auto` skips what is absent, and says so.
    """
    say = progress or (lambda message: None)
    items = [n.strip() for name in ([names] if isinstance(names, str) else names) for n in str(name).split(",")]
    items = [n for n in items if n]
    if not items:
        raise ConfigError("no engines to benchmark; give e.g. auto, cpu, cuda, neuron or cpu-eager")
    chosen: set[str] = set()
    for name in items:
        if name in AUTO:
            for family in FAMILIES:
                problem = get_backend(family).run_problem()
                if problem:
                    say(f"auto: skipping {family}: {problem.split('. ')[0]}")
                else:
                    chosen.update(family_kinds(family))
            continue
        runtime = next((r for r in PEERS if name.startswith(f"cpu-{r}")), None)
        if name not in FAMILIES and name not in KINDS and name not in GROUPS:
            raise ConfigError(f"unknown engine {name!r}; choose from {', '.join((*AUTO, *FAMILIES, *GROUPS, *KINDS))}")
        if runtime:
            peers.require(runtime)
            chosen.update(peer_kinds(runtime) if name in GROUPS else (name,))
            continue
        family = name.split("-", 1)[0]
        problem = get_backend(family).run_problem()
        if problem:
            raise BackendUnavailable(f"engine {name!r} cannot run here: {problem}")
        if name.endswith("-bf16") and family == "cuda" and not hardware.cuda_bf16_supported():
            raise BackendUnavailable(f"engine {name!r} cannot run here: this GPU has no bf16 support")
        chosen.update(family_kinds(family) if name in FAMILIES else (name,))
    return [kind for kind in KINDS if kind in chosen]


def eager_engine(model: torch.nn.Module, kind: str = "cpu-eager") -> Engine:
    """The model in PyTorch eager: on the CPU in fp32, or on the GPU in the kind's precision."""
    if kind == "cpu-eager":
        def run(input_ids, attention_mask, token_type_ids):
            with torch.inference_mode():  # thread-local: entered in each worker's call
                return model(input_ids, attention_mask, token_type_ids)
        return Engine(kind, "fp32", "cpu", cpu_budget(), run, label="PyTorch eager")
    if not kind.startswith("cuda-eager-"):
        raise ConfigError(f"no eager engine {kind!r}; eager engines are cpu-eager and cuda-eager-*")
    from neuron_encoder.backends.base import WithDtype
    from neuron_encoder.backends.cuda import DTYPES, run_on_gpu
    precision = kind.rsplit("-", 1)[1]
    module = WithDtype(model, DTYPES[precision], device="cuda").eval()

    def run_cuda(input_ids, attention_mask, token_type_ids):
        with torch.inference_mode():
            return run_on_gpu(module, (input_ids, attention_mask, token_type_ids))
    return Engine(kind, precision, "cuda", 1, run_cuda,
                  label=f"PyTorch eager on {hardware.cuda_devices()['name']}, synchronised",
                  close=lambda: module.to("meta"))


def peer_engine(kind: str, export: peers.OnnxExport) -> Engine:
    """ONNX Runtime or OpenVINO running the encoder's ONNX export with the process's CPU threads, in one
    pool that concurrent workers share (as a user's server would)."""
    _, runtime, precision = kind.split("-")
    threads = cpu_budget()
    if runtime == "onnxruntime":
        run, version = peers.onnxruntime_run(export.path, threads)
        label = f"ONNX Runtime {version}, all graph optimisations"
    else:
        default = precision == peers.openvino_default_precision()
        run, precision, version = peers.openvino_run(export.path, threads, None if default else precision)
        label = f"OpenVINO {version.split('-')[0]}, {'its default precision here' if default else 'precision hint'}"
    return Engine(kind, precision, "cpu", threads, run, label=f"{label}, torch.onnx export, {threads} threads shared",
                  torch_threads=False)


def _precision_label(manifest: dict) -> str:
    options = manifest.get("options") or {}
    if manifest["backend"] == "neuron" and options.get("auto_cast", "none") != "none":
        return f"{options['auto_cast_type']}-{options['auto_cast']}"  # e.g. bf16-matmult, as AWS labels it
    return manifest["precision"]


def artifact_engine(directory: str | Path, *, replicas: int | None = None, name: str | None = None) -> Engine:
    """A compiled artifact loaded with load_compiled, named after its backend unless `name` is given."""
    compiled = load_compiled(directory, replicas=replicas)
    manifest = compiled.manifest
    backend, precision = manifest["backend"], _precision_label(manifest)
    if backend == "neuron":
        cores = replicas or hardware.neuron_core_count()
        default_name = "neuron-1core" if cores == 1 else "neuron-all-cores"
        label = f"{cores} NeuronCore{'s (a copy per core)' if cores > 1 else ''}"
    elif backend == "cuda":
        cores, default_name, label = 1, f"cuda-artifact-{precision}", "TorchScript artifact"
    else:
        cores, default_name, label = cpu_budget(), f"cpu-artifact-{precision}", "oneDNN artifact"
    # Hash after loading: a first load on a device records its verification in the manifest.
    return Engine(name or default_name, precision, backend, cores, compiled, artifact.manifest_hash(directory),
                  f"{label}, {Path(directory).name}", close=compiled.close)


def plan_engines(resolved: ResolvedModel, kinds: Sequence[str], batch_sizes: Sequence[int],
                 seq_lens: Sequence[int], *, artifacts: Sequence[str | Path] = (),
                 artifacts_dir: str | Path = DEFAULT_ARTIFACTS_DIR,
                 neuron_options: CompileOptions = CompileOptions(),
                 progress: Progress | None = None) -> list[Engine | LazyEngine]:
    """The engines for `kinds` (from resolve_engines) plus one per existing artifact directory.

    Compiled engines are LazyEngines: compiled through compile_model's cache under artifacts_dir,
    for exactly the sweep's batch sizes and sequence lengths, and loaded when the sweep reaches them.
    Existing artifacts must hold the same weights as the model, or their accuracy would mean nothing.
    """
    say = progress or (lambda message: None)
    wants_neuron = bool(artifacts) or any(kind.startswith("neuron") for kind in kinds)
    all_cores = hardware.neuron_core_count() if wants_neuron else 0  # a CPU run never needs the count
    given = _given_artifacts(artifacts, artifact.weights_hash(resolved.encoder), resolved.model_id, all_cores)

    def compiled(backend: str, options: CompileOptions, replicas: int, name: str) -> LazyEngine:
        def build() -> Engine:
            result = compile_model(resolved, batch_sizes=batch_sizes, seq_lens=seq_lens, backend=backend,
                                   options=options, artifacts_dir=artifacts_dir,
                                   progress=lambda message: say(f"compile {name}: {message}"))
            return artifact_engine(result.path, replicas=replicas, name=name)
        return LazyEngine(name, build)

    export = peers.OnnxExport(resolved.encoder)  # made once, when the first peer engine is built
    plans: list[Engine | LazyEngine] = []
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"unknown engine {kind!r}; choose from {', '.join(KINDS)}")
        if kind in given:
            continue  # the artifact the user gave replaces compiling one
        family, _, rest = kind.partition("-")
        if kind == "cpu-eager":
            plans.append(eager_engine(resolved.encoder))
        elif kind.startswith(GROUPS):
            plans.append(LazyEngine(kind, lambda kind=kind: peer_engine(kind, export)))
        elif rest.startswith("eager-"):
            plans.append(LazyEngine(kind, lambda kind=kind: eager_engine(resolved.encoder, kind)))
        elif rest.startswith("artifact-"):
            precision = rest.split("-", 1)[1]
            options = CompileOptions(auto_cast="none" if precision == "fp32" else "matmult",
                                     auto_cast_type="bf16" if precision == "fp32" else precision)
            plans.append(compiled(family, options, 1, kind))
        elif kind == "neuron-1core" or all_cores > 1:
            options = published_options(neuron_options)  # auto: as AWS measured its published numbers
            plans.append(compiled("neuron", options, 1 if kind == "neuron-1core" else all_cores, kind))
        else:
            say(f"skipping neuron-all-cores: this process sees {all_cores} NeuronCore (NEURON_RT_VISIBLE_CORES)")
    plans.extend(given.values())
    if not plans:
        raise ConfigError("nothing to benchmark: no engines and no artifacts")
    return plans


def _given_artifacts(directories: Sequence[str | Path], weights: str, model_id: str,
                     all_cores: int) -> dict[str, LazyEngine]:
    """Engines for existing artifact directories, by name (a Neuron artifact gives two: 1 core, all cores)."""
    given: dict[str, LazyEngine] = {}

    def add(name: str, directory: str | Path, replicas: int) -> None:
        if name in given:
            raise ConfigError(f"two artifacts would both be {name!r}; benchmark them in separate runs")
        given[name] = LazyEngine(name, lambda: artifact_engine(directory, replicas=replicas, name=name))

    for directory in directories:
        manifest = artifact.read_manifest(directory)
        if manifest["model"]["weights_sha256"] != weights:
            raise ConfigError(f"{directory} was compiled from other weights than {model_id}; benchmark it with "
                              "the model it was compiled from, or its accuracy would mean nothing")
        backend = manifest["backend"]
        problem = get_backend(backend).run_problem()
        if problem:
            raise BackendUnavailable(f"{directory} ({backend}) cannot run here: {problem}")
        if backend == "neuron":
            add("neuron-1core", directory, 1)
            if all_cores > 1:
                add("neuron-all-cores", directory, all_cores)
        else:
            add(f"{backend}-artifact-{_precision_label(manifest)}", directory, 1)
    return given

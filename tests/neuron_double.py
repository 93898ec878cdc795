"""TEST DOUBLE of AWS's ``torch_neuronx`` (and of ``neuronxcc``, the module of the neuronx-cc compiler).

This is not the Neuron SDK. No machine we develop on has Neuron hardware or the SDK, so tests put this
module into ``sys.modules["torch_neuronx"]`` with :func:`install`. It follows the SDK's documentation
(aws-neuron/aws-neuron-sdk: frameworks/torch/torch-neuronx/api-reference-guide/inference/, the
neuron-runtime configuration guide, compiler/neuronx-cc/api-reference-guide/index.rst), each behaviour
with its source beside it, not our code: the same signatures, compiler flags, save/load path and runtime
rules. Where the docs are silent the double says so and picks the strict reading.

How it stands in for the SDK:

- ``trace`` runs ``torch.jit.trace`` on CPU, so outputs are real numbers. The traced graph is serialised
  into a uint8 buffer (our "NEFF") and executed by a custom op, ``neuron_double::forward``, the way the
  real module calls ``neuron::forward_v2`` on an embedded NEFF. That op enforces what the hardware does:
  fixed input shapes and dtypes, no execution without NeuronCores.
- ``compiler_workdir`` gets what the real trace leaves there (torch_neuronx/xla_impl/trace.py): model/graph.hlo,
  model/weights/*.npy (a copy of every weight), model/metadata.json, graph.neff and command.txt. The
  compiler's log goes to ``--logfile``, by default log-neuron-cc.txt in the process's working directory.
- ``--auto-cast matmult|all`` with ``--auto-cast-type bf16|fp16|tf32|fp8_e4m3`` rounds the operands of the
  chosen operations to that type, so a numerics gate sees reduced-precision error.
- Compiler flags are parsed like neuronx-cc's CLI; an unknown flag or value fails as
  ``RuntimeError("neuronx-cc failed with 2")``, the wrapper message of torch_neuronx's ``hlo_compile``.
- The runtime starts once per process, at the first load, placement or core count, and reads
  NEURON_RT_VISIBLE_CORES / NEURON_RT_NUM_CORES / NEURON_LOGICAL_NC_CONFIG then, never again.
  ``devices`` is the number of Neuron devices (chips): 2 NeuronCores each on inf2/trn1, 8 // LNC on trn2.
- ``torch.jit.load`` (patched while the double is installed, as importing torch_neuronx registers the
  Neuron classes) places a model on a NeuronCore at load: the least used visible core, or the cores of an
  enclosing ``neuron_cores_context``; a collected model frees its core. A NEFF for another NeuronCore
  generation (trn2 on inf2 or the reverse), or for another LNC than the runtime's, does not load, unless
  NEURON_RT_ALLOW_LEGACY_NEFF=TRUE lets a trn1 NEFF load on trn2.

Only what neuron-encoder calls is there: ``trace``, ``__version__``, ``neuron_cores_context`` (top level and
under ``experimental``), the placing ``torch.jit.load``, and neuronx-cc's distribution metadata. Not
emulated: the rest of the API (DataParallel, dynamic_batch, analyze, lazy/async load, set_neuron_cores),
/dev/neuron*, /proc/devices, DMI and neuron-ls (patch our hardware probes separately), compile time and
host memory.

Messages quoted from the real SDK are marked "real:"; the others are plausible stand-ins, marked
"stand-in:". Everything the double records for assertions lives on ``torch_neuronx.double``
(:class:`DoubleState`), an attribute the real module does not have.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import importlib.machinery
import io
import json
import os
import random
import shlex
import shutil
import sys
import tempfile
import threading
import types
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

# The pair aws-neuron-sdk setup/pytorch/manual.rst installs for Neuron 2.32: torch-neuronx from Neuron
# 2.31 (the last release that ships it) with Neuron 2.32's compiler (release-notes/components/compiler.rst).
TORCH_NEURONX_VERSION = "2.9.0.2.15.32035"
NEURONX_CC_VERSION = "2.27.5334.0"
TARGETS = ("inf2", "trn1", "trn1n", "trn2")
# NeuronCore-v2 on inf2/trn1 (2 per chip); NeuronCore-v3 on trn2 (8 physical per chip, shown as 8 // LNC):
# about-neuron/arch/neuron-hardware/*.rst, about-neuron/arch/neuron-features/logical-neuroncore-config.rst.
GENERATION = {"inf2": 2, "trn1": 2, "trn1n": 2, "trn2": 3}
PHYSICAL_CORES = {"inf2": 2, "trn1": 2, "trn1n": 2, "trn2": 8}
OP_NAME = "neuron_double::forward"
# Ops neuronx-cc cannot lower: data-dependent output shapes (NEURON.md: nonzero, sort are unsupported).
UNSUPPORTED_OPS = frozenset({
    "aten::nonzero", "aten::sort", "aten::argsort", "aten::unique", "aten::_unique2",
    "aten::unique_consecutive", "aten::masked_select", "aten::fft_fft",
})
# A buffer of the traced module, so these survive torch.jit.save/load as a NEFF would: the target and LNC
# it was compiled for. Placement is not saved: it happens at load.
TARGET, LNC = range(2)
_JIT_LOAD = torch.jit.load  # the real one: the double's own graph loads must not be placed

# real: torch_neuronx 2.x tracing without cpu_backend on a host with no Neuron device
# (aws-neuron/aws-neuron-sdk issues #902, #910).
NO_DEVICE_ERROR = ("Bad StatusOr access: INVALID_ARGUMENT: PJRT_Client_Create: error condition "
                   "nullptr != (args)->client->Error(): Init: error condition !(num_devices > 0): ")
# real: cpu_backend=True with no --target (huggingface/optimum-neuron PR #961).
NO_TARGET_ERROR = ("If you want to compile on CPU, please supply compiler argument target, with one of "
                   'options trn1, inf2, trn1n, or trn2. Ex: "--target trn1"')
# real: hlo_compile when `import neuronxcc` fails (torch_neuronx/xla_impl/trace.py).
NO_COMPILER_ERROR = ("neuronx-cc is not installed.\nneuronx-cc can be installed using:\n"
                     "python3 -m pip install --extra-index-url=https://pip.repos.neuron.amazonaws.com neuronx-cc")
# real: running a model on a host whose runtime cannot start (aws-neuron/aws-neuron-sdk issue #835).
NO_RUNTIME_ERROR = "The PyTorch Neuron Runtime could not be initialized. Neuron Driver issues are logged."
# real log line (deploy/troubleshooting.rst); the exception around it is a stand-in.
NOT_CONTIGUOUS_ERROR = "NRT:nrt_allocate_neuron_cores               Neuron cores are not contiguous"


@dataclasses.dataclass
class Call:
    """One call into the double, kept for assertions."""

    name: str
    args: tuple
    kwargs: dict


@dataclasses.dataclass
class Compilation:
    """What one successful ``trace`` compiled, with its parsed neuronx-cc options."""

    compiler_args: list[str]
    options: dict[str, Any]
    target: str
    input_shapes: list[tuple[int, ...]]
    input_dtypes: list[torch.dtype]
    compiler_workdir: str | None
    cpu_backend: bool
    graph_id: int


@dataclasses.dataclass
class Execution:
    """One run of a compiled graph on a (pretend) NeuronCore, by its index among the visible cores."""

    core: int
    shapes: list[tuple[int, ...]]


@dataclasses.dataclass
class Placement:
    """Where a loaded model lives: nc_count cores from start_nc, used round robin."""

    start_nc: int
    nc_count: int
    runs: int = 0


class DoubleState:
    """The double's knobs, its runtime and its record of calls; lives at ``torch_neuronx.double``."""

    def __init__(self, devices: int, platform: str) -> None:
        if platform not in TARGETS:
            raise ValueError(f"platform must be one of {TARGETS}, got {platform!r}")
        self.devices = devices
        self.platform = platform
        self.busy = False  # True: another process holds every NeuronCore
        self.calls: list[Call] = []
        self.compilations: list[Compilation] = []
        self.executions: list[Execution] = []
        self.placements: dict[int, Placement] = {}  # flags buffer address -> where that model is loaded
        self.runtime: dict[str, int] | None = None  # set when the runtime starts: {"visible": n, "lnc": l}
        self.context: tuple[int, int] | None = None  # (start_nc, nc_count) of neuron_cores_context
        self._lock = threading.RLock()
        self._local = threading.local()

    def record(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Keep a call; compiled models only by weak reference, so the record does not hold their cores."""
        def weak(value: Any) -> Any:
            return weakref.ref(value) if isinstance(value, torch.jit.ScriptModule) else value
        with self._lock:
            self.calls.append(Call(name, tuple(map(weak, args)), {k: weak(v) for k, v in kwargs.items()}))

    def calls_to(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.name == name]

    def is_double_trace(self, module: torch.nn.Module) -> bool:
        """True if ``module`` (or a submodule) was compiled by the double; survives save/load."""
        graph = getattr(module, "inlined_graph", None)
        return graph is not None and OP_NAME in str(graph)

    def start_runtime(self) -> dict[str, int]:
        """Start the runtime once: it reads the NEURON_RT_* variables now and never again
        (nrt-developer-guide.rst: the runtime is configured by the environment before nrt_init)."""
        with self._lock:
            if self.runtime is None:
                self.runtime = self._configure()
            return self.runtime

    def _configure(self) -> dict[str, int]:
        if self.devices == 0:  # no device: the runtime does not start, whatever the variables say
            raise RuntimeError(NO_RUNTIME_ERROR)
        lnc = int(os.environ.get("NEURON_LOGICAL_NC_CONFIG", "2")) if self.platform == "trn2" else 1
        total = self.devices * PHYSICAL_CORES[self.platform] // lnc
        spec = os.environ.get("NEURON_RT_VISIBLE_CORES", "").strip()
        count = os.environ.get("NEURON_RT_NUM_CORES", "").strip() or "0"
        if spec:  # VISIBLE_CORES wins when both are set (configuration-guide.rst, note 5)
            cores = _parse_core_list(spec)
            if cores != list(range(cores[0], cores[0] + len(cores))):
                raise RuntimeError(f"stand-in: {NOT_CONTIGUOUS_ERROR} ({spec})")
            requested, visible = spec, len(cores) if cores[-1] < total else -1
        else:  # 0, the default, means all (configuration-guide.rst)
            requested, visible = count, (int(count) or total) if int(count) <= total else -1
        if visible < 0 or self.busy:  # stand-in, worded like the log line in training-troubleshooting.rst
            raise RuntimeError(f"NeuronCore(s) not available - Requested:{requested} "
                               f"Available:{0 if self.busy else total}")
        # configuration-guide.rst: NEURON_RT_ALLOW_LEGACY_NEFF=TRUE runs trn1 NEFFs on trn2 (runtime 2.25+).
        legacy = int(os.environ.get("NEURON_RT_ALLOW_LEGACY_NEFF", "").strip().upper() == "TRUE")
        return {"visible": visible, "lnc": lnc, "legacy": legacy}

    def visible_cores(self) -> int:
        """NeuronCores this process may use; starts the runtime."""
        return self.start_runtime()["visible"]

    def least_used_core(self) -> int:
        """The default placement: the visible core with the fewest loaded models, lowest index first
        (api-torch-neuronx-core-placement.rst: start_nc=-1 "loads to the optimal NeuronCore (least used)")."""
        load = [0] * self.visible_cores()
        for placement in self.placements.values():
            for core in range(placement.start_nc, placement.start_nc + placement.nc_count):
                load[core] += 1
        return load.index(min(load))

    def load(self, flags: torch.Tensor, start_nc: int = -1, nc_count: int = -1) -> None:
        """Load a model (by its flags buffer) onto NeuronCores, replacing where it was."""
        with self._lock:
            runtime = self.start_runtime()
            _check_loadable(flags, self.platform, runtime["lnc"], bool(runtime["legacy"]))
            self.placements.pop(flags.data_ptr(), None)  # a model is loaded in one place at a time
            start = self.least_used_core() if start_nc == -1 else start_nc
            count = 1 if nc_count == -1 else nc_count
            if count < 1 or start < 0 or start + count > runtime["visible"]:  # the doc names ValueError
                raise ValueError(f"stand-in: invalid NeuronCore placement start_nc={start_nc} nc_count={nc_count} "
                                 f"for {runtime['visible']} visible NeuronCores")
            self.placements[flags.data_ptr()] = Placement(start, count)

    def load_module(self, module: torch.nn.Module, start_nc: int = -1, nc_count: int = -1) -> None:
        """Load every Neuron graph of ``module``; it frees its cores when it is collected."""
        for flags in _flags_of(module, "load"):
            self.load(flags, start_nc, nc_count)
            weakref.finalize(module, self.unload, flags.data_ptr())

    def unload(self, address: int) -> None:
        with self._lock:
            self.placements.pop(address, None)


def _check_loadable(flags: torch.Tensor, platform: str, lnc: int, legacy: bool = False) -> None:
    """A NEFF loads only on its NeuronCore generation (optimum-neuron's export guide: trn2 models do not
    run on inf2, and vice versa), except trn1 NEFFs on trn2 when the runtime allows legacy NEFFs, and on
    trn2 only with the runtime's LNC (logical-neuroncore-config.rst). The real errors are not documented:
    stand-ins."""
    target = TARGETS[int(flags[TARGET])]
    if legacy and target in ("trn1", "trn1n") and platform == "trn2":
        return
    if GENERATION[target] != GENERATION[platform]:
        raise RuntimeError(f"stand-in: NEFF compiled for {target} (NeuronCore-v{GENERATION[target]}) cannot load "
                           f"on {platform} (NeuronCore-v{GENERATION[platform]})")
    if target == "trn2" and int(flags[LNC]) != lnc:
        raise RuntimeError(f"stand-in: NEFF compiled for LNC={int(flags[LNC])}, runtime uses LNC={lnc}")


def _parse_core_list(spec: str) -> list[int]:
    """'0-1' -> [0, 1]; '3' -> [3]; '3-5,6' -> [3, 4, 5, 6]; '0,2' -> [0, 2], in the order given
    (nrt-developer-guide.rst: a list, a range or both; the runtime then requires one contiguous range)."""
    cores: list[int] = []
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"NEURON_RT_VISIBLE_CORES: cannot parse {spec!r}")
        cores.extend(range(int(first), int(last or first) + 1))
    return cores


def _state() -> DoubleState:
    """The installed double's state; the custom op finds it here, as the real op needs the SDK imported."""
    module = sys.modules.get("torch_neuronx")
    state = getattr(module, "double", None)
    if not isinstance(state, DoubleState):
        # stand-in: the real failure is an unknown neuron:: op/class when torch_neuronx was not imported
        raise RuntimeError("Neuron model executed without `import torch_neuronx` (the double is not installed)")
    return state


# ----------------------------------------------------------------------------- neuronx-cc flags

class CompilerArgsError(Exception):
    """neuronx-cc's argument parser rejected the flags."""


class _CompilerParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit(2)
        raise CompilerArgsError(message)


def _compiler_parser() -> _CompilerParser:
    """The `neuronx-cc compile` options of the current CLI reference guide
    (aws-neuron/aws-neuron-sdk compiler/neuronx-cc/api-reference-guide/index.rst)."""
    parser = _CompilerParser(prog="neuronx-cc", add_help=False, allow_abbrev=False)
    parser.add_argument("--framework", choices=["XLA"])
    parser.add_argument("--target", choices=TARGETS)
    parser.add_argument("--model-type", choices=["generic", "transformer", "unet-inference"], default="generic")
    parser.add_argument("--auto-cast", choices=["none", "matmult", "all"], default="none")  # default none since 2.27
    parser.add_argument("--auto-cast-type", choices=["bf16", "fp16", "tf32", "fp8_e4m3"], default="bf16")
    parser.add_argument("--native-int64", choices=["default", "enabled", "disabled"], default="default")
    parser.add_argument("--implicit-integer-downcast", default="default")
    parser.add_argument("--distribution-strategy", choices=["llm-training", "NEMO"])
    # The CLI guide spells it --logical-nc-config or -lnc; error code EARG001's example passes --lnc.
    parser.add_argument("--logical-nc-config", "-lnc", "--lnc", choices=["1", "2"])
    parser.add_argument("--optlevel", "-O", choices=["1", "2", "3"], default="2")
    for flag in ("--enable-mixed-precision-accumulation", "--disable-mixed-precision-accumulation",
                 "--enable-saturate-infinity", "--enable-fast-context-switch",
                 "--enable-fast-loading-neuron-binaries"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--logfile", default="log-neuron-cc.txt")
    parser.add_argument("--output", default="file.neff")
    parser.add_argument("--verbose", default="warning")
    return parser


def parse_compiler_args(compiler_args: str | list[str] | None) -> dict[str, Any]:
    """Parse ``compiler_args`` as torch_neuronx does (a str is shlex-split) and as neuronx-cc would.

    Raises CompilerArgsError with argparse's message ("unrecognized arguments: --foo",
    "argument --auto-cast: invalid choice: 'matmul' ...").
    """
    return vars(_compiler_parser().parse_args(_arg_list(compiler_args)))


def _arg_list(compiler_args: str | list[str] | None) -> list[str]:
    if compiler_args is None:
        return []
    if isinstance(compiler_args, str):
        return shlex.split(compiler_args)
    if isinstance(compiler_args, (list, tuple)) and all(isinstance(a, str) for a in compiler_args):
        return list(compiler_args)
    raise TypeError(f"compiler_args must be a str or list[str], got {compiler_args!r}")


def _platform_target(options: dict[str, Any], state: DoubleState) -> str:
    """--target, else NEURON_PLATFORM_TARGET_OVERRIDE, else the host's own family
    (after torch_neuronx.utils.utils.get_platform_target, as adapted in optimum/neuron/utils/system.py)."""
    if options["target"]:
        return options["target"]
    override = os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE")
    if override:
        if override not in TARGETS:  # real (optimum-neuron's copy of the SDK check)
            raise ValueError(f"{override} is not a valid instance type, supported instance types are: {list(TARGETS)}.")
        return override
    if state.devices == 0:  # nothing to read the platform from (a Neuron host answers even with cpu_backend)
        raise RuntimeError(NO_TARGET_ERROR)
    return state.platform


# ----------------------------------------------------------------------------- auto-cast numerics

_MATMUL_OPS = frozenset({"linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm",
                         "einsum", "scaled_dot_product_attention", "conv1d", "conv2d"})
_NEVER_CAST = frozenset({"__setitem__", "__get__", "__set__", "size", "dim", "numel"})


def _round_to(dtype_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function rounding a float32 tensor to ``dtype_name`` and back; the arithmetic stays float32,
    as the NeuronCore accumulates matmuls in fp32."""
    if dtype_name in ("bf16", "fp16"):
        dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float16
        return lambda t: t.to(dtype).to(torch.float32)
    if dtype_name == "fp8_e4m3":  # clamp first: float8_e4m3fn has no inf and overflows to NaN
        return lambda t: t.clamp(-448.0, 448.0).to(torch.float8_e4m3fn).to(torch.float32)

    def tf32(t: torch.Tensor) -> torch.Tensor:  # 10 stored mantissa bits = 11 significant bits
        mantissa, exponent = torch.frexp(t)
        return torch.ldexp(torch.round(mantissa * 2048.0) / 2048.0, exponent)
    return tf32


class _AutoCastMode(TorchFunctionMode):
    """Emulates neuronx-cc --auto-cast: rounds float32 operands (and results) of the cast operations."""

    def __init__(self, mode: str, dtype_name: str) -> None:
        super().__init__()
        self.all_ops = mode == "all"
        self.round = _round_to(dtype_name)

    def _cast(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
            return self.round(value)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inplace = (name.endswith("_") and not name.endswith("__")) or (name.startswith("__i") and name.endswith("__"))
        if name in _NEVER_CAST or inplace or not (self.all_ops or name in _MATMUL_OPS):
            return func(*args, **kwargs)
        args, kwargs = pytree.tree_map(self._cast, (args, kwargs))
        return pytree.tree_map(self._cast, func(*args, **kwargs))


# ----------------------------------------------------------------------------- the "NEFF" and its op

_GRAPHS: dict[int, torch.jit.ScriptModule] = {}
_GRAPHS_LOCK = threading.Lock()


def _decode_meta(meta: list[int]) -> tuple[int, list[tuple[int, tuple[int, ...]]]]:
    """meta = [graph_id, n_inputs, (dtype_code, ndim, *shape) per input]."""
    graph_id, count, specs, i = meta[0], meta[1], [], 2
    for _ in range(count):
        code, ndim = meta[i], meta[i + 1]
        specs.append((code, tuple(meta[i + 2:i + 2 + ndim])))
        i += 2 + ndim
    return graph_id, specs


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
           torch.int16, torch.int8, torch.uint8, torch.bool]


def _load_graph(graph_id: int, neff: torch.Tensor) -> torch.jit.ScriptModule:
    with _GRAPHS_LOCK:
        if graph_id not in _GRAPHS:
            _GRAPHS[graph_id] = _JIT_LOAD(io.BytesIO(neff.numpy().tobytes()))
        return _GRAPHS[graph_id]


def _run_graph(graph: torch.jit.ScriptModule, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return pytree.tree_leaves(graph(*inputs))


def _execute(inputs: list[torch.Tensor], neff: torch.Tensor, flags: torch.Tensor,
             meta: list[int]) -> list[torch.Tensor]:
    """The double's ``neuron::forward_v2``: validate like the runtime, then run the embedded graph."""
    state = _state()
    graph_id, specs = _decode_meta(meta)
    graph = _load_graph(graph_id, neff)
    if getattr(state._local, "tracing", False):
        return [t.clone() for t in _run_graph(graph, inputs)]
    _check_inputs(inputs, specs)
    with state._lock:
        if flags.data_ptr() not in state.placements:  # traced with cpu_backend=True: loaded by its first run
            state.load(flags)
        placement = state.placements[flags.data_ptr()]
        state.executions.append(Execution(placement.start_nc + placement.runs % placement.nc_count,
                                          [tuple(t.shape) for t in inputs]))
        placement.runs += 1
    return [t.clone() for t in _run_graph(graph, inputs)]  # outputs never alias inputs


def _check_inputs(inputs: list[torch.Tensor], specs: list[tuple[int, tuple[int, ...]]]) -> None:
    """What the runtime checks against the model's metadata: count, dtype, shape (all fixed at trace time)."""
    if len(inputs) != len(specs):
        raise RuntimeError(f"stand-in: expected {len(specs)} input tensors, got {len(inputs)}")
    for index, (tensor, (code, shape)) in enumerate(zip(inputs, specs)):
        if tensor.dtype != _DTYPES[code]:
            raise RuntimeError(f"stand-in: input{index} has dtype {tensor.dtype}, compiled for {_DTYPES[code]}")
        if tuple(tensor.shape) != shape:
            raise RuntimeError(f"stand-in: input{index} has shape {list(tensor.shape)} but the model was "
                               f"compiled for {list(shape)}; Neuron models have fixed input shapes")


def _register_op() -> None:
    """Register ``neuron_double::forward`` once per process (this file may be imported under two names)."""
    try:
        torch._C._dispatch_find_schema_or_throw(OP_NAME, "")
        return
    except RuntimeError:
        pass
    library = torch.library.Library("neuron_double", "DEF")
    library.define("forward(Tensor[] inputs, Tensor neff, Tensor flags, int[] meta) -> Tensor[]")
    library.impl("forward", _execute, "CPU")
    _LIBRARIES.append(library)


_LIBRARIES: list[torch.library.Library] = []  # a Library unregisters its ops when collected
_register_op()


class _NeuronGraph(torch.nn.Module):
    """What trace returns before tracing: a NEFF blob, runtime flags and a packer for the outputs."""

    def __init__(self, neff: torch.Tensor, meta: list[int], out_spec: pytree.TreeSpec, target: str,
                 lnc: int) -> None:
        super().__init__()
        self.register_buffer("neff", neff)
        self.register_buffer("neuron_flags", torch.tensor([TARGETS.index(target), lnc]))
        self.meta = meta
        self.out_spec = out_spec

    def forward(self, *tensors: torch.Tensor) -> Any:
        outputs = torch.ops.neuron_double.forward(list(tensors), self.neff, self.neuron_flags, self.meta)
        return pytree.tree_unflatten(list(outputs), self.out_spec)


class _Function(torch.nn.Module):
    """Lets a plain function be traced, saved and loaded as a module."""

    def __init__(self, func: Callable) -> None:
        super().__init__()
        self.func = func

    def forward(self, *args: Any) -> Any:
        return self.func(*args)


def _flags_of(module: torch.nn.Module, api: str) -> list[torch.Tensor]:
    flags = [buf for name, buf in module.named_buffers() if name.endswith("neuron_flags")]
    if not flags:  # stand-in
        raise ValueError(f"torch_neuronx.{api} expects a model returned by torch_neuronx.trace")
    return flags


def _compile(func: Callable, inputs: tuple[torch.Tensor, ...], options: dict[str, Any], parse_error: str | None,
             target: str, workdir: Path, user_args: list[str], state: DoubleState) -> tuple[torch.jit.ScriptModule, int]:
    """What trace's _trace and hlo_compile do: write the HLO and weights, run neuronx-cc (here: flag checks
    and torch.jit.trace), write the NEFF; a failure leaves the log and raises neuronx-cc's wrapper error."""
    command = ["neuronx-cc", "compile", "model", "--framework", "XLA", "--target", target,
               "--output", "graph.neff", *user_args]
    log = _log_path(user_args)
    module = func if isinstance(func, torch.nn.Module) else _Function(func)
    _write_model_dir(workdir / "model", module, command)
    if parse_error is not None:
        _write_compiler_log(log, command, f"neuronx-cc: error: {parse_error}", "FAIL")
        raise RuntimeError("neuronx-cc failed with 2")  # real wrapper message; 2 = argparse usage error
    lnc = options["logical_nc_config"]
    if lnc == "2" and target != "trn2":  # EARG001: LNC 2 is trn2's; "on trn1, only lnc=1 is supported"
        _write_compiler_log(log, command, "ERROR [NCC_EARG001] Logical NeuronCore config 2 is not supported "
                                          f"by target {target}", "FAIL")
        raise RuntimeError("neuronx-cc failed with 1")  # stand-in status: the docs give none
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        cast = (_AutoCastMode(options["auto_cast"], options["auto_cast_type"])
                if options["auto_cast"] != "none" else contextlib.nullcontext())
        with cast:
            graph = torch.jit.trace(module, inputs, check_trace=False, strict=False)
        unsupported = sorted({node.kind() for node in graph.inlined_graph.nodes()} & UNSUPPORTED_OPS)
        if unsupported:  # stand-in for the compiler's NCC_* diagnostics
            _write_compiler_log(log, command, f"ERROR [NCC_EVRF029] Operation {unsupported[0]} is not supported",
                                "FAIL")
            raise RuntimeError("neuronx-cc failed with 70")
        outputs = graph(*inputs)
    leaves, out_spec = pytree.tree_flatten(outputs)
    if not all(isinstance(leaf, torch.Tensor) for leaf in leaves):
        raise TypeError("stand-in: traced outputs must be tensors or tuples/lists/dicts of tensors")
    graph_id = random.getrandbits(62)
    meta = [graph_id, len(inputs)]
    for tensor in inputs:
        meta += [_DTYPES.index(tensor.dtype), tensor.dim(), *tensor.shape]
    buffer = io.BytesIO()
    torch.jit.save(graph, buffer)
    (workdir / "graph.neff").write_bytes(buffer.getvalue())
    neff = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    wrapper = _NeuronGraph(neff, meta, out_spec, target, int(lnc or 2) if target == "trn2" else 0)
    state._local.tracing = True
    try:
        traced = torch.jit.trace(wrapper, inputs, check_trace=False, strict=False)
    finally:
        state._local.tracing = False
    _write_compiler_log(log, command, "", "PASS")
    return traced, graph_id


def _write_model_dir(model_dir: Path, module: torch.nn.Module, command: list[str]) -> None:
    """compiler_workdir as torch_neuronx's _trace leaves it: model/graph.hlo, model/weights/<name>.npy (a
    copy of every weight), model/metadata.json, and command.txt (the command's basenames) beside it."""
    (model_dir / "weights").mkdir(parents=True, exist_ok=True)
    weights = {}
    for name, tensor in module.state_dict().items():
        array = tensor.detach().cpu()
        array = array.view(torch.int16).numpy().view("|V2") if array.dtype == torch.bfloat16 else array.numpy()
        np.save(model_dir / "weights" / f"{name}.npy", array)
        weights[name] = f"weights/{name}.npy"
    (model_dir / "graph.hlo").write_text(f"TEST DOUBLE: not an HloModuleProto\n{type(module).__name__}\n")
    (model_dir / "metadata.json").write_text(json.dumps({"model_files": "graph.hlo", "version": "1.0",
                                                         "weights": weights}, indent=4))
    (model_dir.parent / "command.txt").write_text(" ".join(os.path.basename(str(part)) for part in command))


def _log_path(user_args: list[str]) -> Path:
    """--logfile (CLI guide; default log-neuron-cc.txt), relative to the process's working directory: the
    real hlo_compile runs neuronx-cc without a cwd of its own."""
    return Path(_raw_option(user_args, "--logfile") or "log-neuron-cc.txt")


def _raw_option(user_args: list[str], flag: str) -> str | None:
    """The last value of `flag` in the arguments, parsed or not ("--flag value" or "--flag=value")."""
    value = None
    for i, arg in enumerate(user_args):
        if arg == flag and i + 1 < len(user_args):
            value = user_args[i + 1]
        elif arg.startswith(f"{flag}="):
            value = arg.split("=", 1)[1]
    return value


# ----------------------------------------------------------------------------- the public API

def _build_module(state: DoubleState, with_compiler: bool) -> types.ModuleType:
    module = types.ModuleType("torch_neuronx", "TEST DOUBLE of torch_neuronx (tests/neuron_double.py)")
    module.__spec__ = importlib.machinery.ModuleSpec("torch_neuronx", None, origin=__file__, is_package=True)
    module.__path__ = []
    module.__file__ = __file__
    module.__version__ = TORCH_NEURONX_VERSION
    module.double = state

    def trace(func, example_inputs, *_, input_output_aliases={}, compiler_workdir=None, compiler_args=None,
              partitioner_config=None, inline_weights_to_neff=True, cpu_backend=False):
        """Trace ``func`` on CPU and wrap it as a Neuron model (see the module docstring)."""
        state.record("trace", func, example_inputs, *_, input_output_aliases=input_output_aliases,
                     compiler_workdir=compiler_workdir, compiler_args=compiler_args,
                     partitioner_config=partitioner_config, inline_weights_to_neff=inline_weights_to_neff,
                     cpu_backend=cpu_backend)
        if _:  # real: positional arguments after example_inputs are deprecated but still mapped
            warnings.warn(f"Received {2 + len(_)} positional arguments but expected 2. Use of positional "
                          "arguments after `func` and `example_inputs` is deprecated. Please specify keyword "
                          "arguments instead.", DeprecationWarning, stacklevel=2)
            _states, aliases, workdir, args, _options = (tuple(_) + (None,) * 5)[:5]
            input_output_aliases = aliases if aliases is not None else input_output_aliases
            compiler_workdir = workdir if workdir is not None else compiler_workdir
            compiler_args = args if args is not None else compiler_args
        inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
        if not isinstance(inputs, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in inputs):
            raise TypeError("stand-in: example_inputs must be a tensor or a tuple of tensors")
        try:
            options, parse_error = parse_compiler_args(compiler_args), None
        except CompilerArgsError as error:  # torch_neuronx still finds --target among the flags
            options, parse_error = {"target": _raw_option(_arg_list(compiler_args), "--target")}, str(error)
        if not cpu_backend and state.devices == 0:
            raise RuntimeError(NO_DEVICE_ERROR)  # tracing runs on an XLA device
        target = _platform_target(options, state)
        if not with_compiler:
            raise RuntimeError(NO_COMPILER_ERROR)
        # The real trace uses a temporary directory when given none (torch_neuronx/xla_impl/trace.py).
        with contextlib.ExitStack() as stack:
            workdir = Path(compiler_workdir or stack.enter_context(tempfile.TemporaryDirectory()))
            traced, graph_id = _compile(func, tuple(inputs), options, parse_error, target, workdir,
                                        _arg_list(compiler_args), state)
        state.compilations.append(Compilation(
            compiler_args=_arg_list(compiler_args), options=options, target=target,
            input_shapes=[tuple(t.shape) for t in inputs], input_dtypes=[t.dtype for t in inputs],
            compiler_workdir=None if compiler_workdir is None else str(compiler_workdir),
            cpu_backend=cpu_backend, graph_id=graph_id))
        if not cpu_backend:  # traced on the device: the model is initialised there (api-torch-neuronx-trace.rst)
            state.load_module(traced)
        return traced

    @contextlib.contextmanager
    def neuron_cores_context(start_nc=-1, nc_count=-1):
        """Place the models torch.jit.load loads inside the context. Not thread-safe, as documented: the
        placement is one process-wide setting, not per thread."""
        state.record("neuron_cores_context", start_nc=start_nc, nc_count=nc_count)
        outer, state.context = state.context, (start_nc, nc_count)
        try:
            yield
        finally:
            state.context = outer

    module.trace, module.neuron_cores_context = trace, neuron_cores_context
    module.experimental = _experimental(module)
    return module


def _placing_load(state: DoubleState) -> Callable[..., Any]:
    """torch.jit.load as it behaves once torch_neuronx is imported: a Neuron model is loaded onto a
    NeuronCore at load time (the least used one, or the enclosing neuron_cores_context's)."""
    def load(*args: Any, **kwargs: Any) -> Any:
        model = _JIT_LOAD(*args, **kwargs)
        if state.is_double_trace(model):
            start_nc, nc_count = state.context or (-1, -1)
            state.load_module(model, start_nc, nc_count)
        return model
    return load


def _experimental(module: types.ModuleType) -> types.ModuleType:
    """``torch_neuronx.experimental``: the placement API's old home, still working with a warning
    since Neuron 2.25 (release-notes/2.25.0/nx-pytorch.rst)."""
    experimental = types.ModuleType("torch_neuronx.experimental")
    experimental.__spec__ = importlib.machinery.ModuleSpec("torch_neuronx.experimental", None)
    def neuron_cores_context(*args, **kwargs):
        warnings.warn("In a future version torch_neuronx.experimental.neuron_cores_context will be removed.  "
                      "Call torch_neuronx.neuron_cores_context instead.", DeprecationWarning, stacklevel=2)
        return module.neuron_cores_context(*args, **kwargs)
    experimental.neuron_cores_context = neuron_cores_context
    return experimental


def _write_compiler_log(path: Path, command: list[str], message: str, status: str) -> None:
    """neuronx-cc's log file, at --logfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# TEST DOUBLE (tests/neuron_double.py): not real neuronx-cc output",
             f"NeuronX Compiler version {NEURONX_CC_VERSION}", " ".join(shlex.quote(part) for part in command)]
    path.write_text("\n".join([*lines, *[message] * bool(message), f"Compiler status {status}", ""]))


# ----------------------------------------------------------------------------- installation

_DIST_DIRS: dict[bool, str] = {}


def _dist_dir(with_compiler: bool) -> str:
    """A sys.path entry with *.dist-info so importlib.metadata.version('torch-neuronx' / 'neuronx-cc') works."""
    if with_compiler not in _DIST_DIRS:
        root = tempfile.mkdtemp(prefix="neuron_double_dist_")
        atexit.register(shutil.rmtree, root, True)
        packages = [("torch_neuronx", "torch-neuronx", TORCH_NEURONX_VERSION)]
        if with_compiler:
            packages.append(("neuronx_cc", "neuronx-cc", NEURONX_CC_VERSION))
        for stem, name, version in packages:
            info = Path(root) / f"{stem}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        _DIST_DIRS[with_compiler] = root
    return _DIST_DIRS[with_compiler]


def install(monkeypatch, *, devices: int = 0, platform: str = "inf2", neuronx_cc: bool = True) -> types.ModuleType:
    """Put the double into ``sys.modules['torch_neuronx']`` for one test; monkeypatch undoes it.

    devices: Neuron devices on the pretend host (0 = a CPU-only build host; 1 = inf2.xlarge's 2 cores).
    platform: the host's instance family: the target when --target is not given, and what it can run.
    neuronx_cc: also install the compiler's module ``neuronxcc`` (its import name; the distribution is
        ``neuronx-cc``) and its metadata. False makes trace fail as it does without the compiler.
    Returns the fake module; its ``double`` attribute records calls and holds the knobs.
    """
    state = DoubleState(devices=devices, platform=platform)
    module = _build_module(state, with_compiler=neuronx_cc)
    monkeypatch.setitem(sys.modules, "torch_neuronx", module)
    monkeypatch.setitem(sys.modules, "torch_neuronx.experimental", module.experimental)
    monkeypatch.setattr(torch.jit, "load", _placing_load(state))
    if neuronx_cc:
        compiler = types.ModuleType("neuronxcc", "TEST DOUBLE of neuronx-cc's module (tests/neuron_double.py)")
        compiler.__spec__ = importlib.machinery.ModuleSpec("neuronxcc", None, origin=__file__)
        compiler.__version__ = NEURONX_CC_VERSION
        monkeypatch.setitem(sys.modules, "neuronxcc", compiler)
    else:
        monkeypatch.delitem(sys.modules, "neuronxcc", raising=False)
    monkeypatch.syspath_prepend(_dist_dir(neuronx_cc))
    return module


@contextlib.contextmanager
def installed(**kwargs: Any) -> Iterator[types.ModuleType]:
    """``install`` outside a pytest fixture (scripts, doctests); tests should use ``install``."""
    import pytest
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield install(monkeypatch, **kwargs)

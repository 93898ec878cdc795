"""What every backend provides: compile one bucket, save it, load it, say whether it can run here."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .. import platforms
from ..errors import ConfigError

TARGETS = tuple(platforms.TARGETS)
AUTO_CASTS = ("auto", "none", "matmult", "all")  # the compiler's own spelling: matmult; auto: hardware's policy
AUTO_CAST_TYPES = ("bf16", "fp16", "tf32", "fp8_e4m3")

# A compiled bucket, ready to run: called with (input_ids, attention_mask, token_type_ids) of exactly
# its shape, it returns the last hidden state (B, T, H) on the host.
BucketModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CompileOptions:
    """How to compile, in neuronx-cc's vocabulary; CPU and CUDA read the precision from it.

    auto_cast="auto" leaves the precision to hardware.auto_precision; select_backend resolves it
    before anything is compiled, so an artifact always records a concrete choice.
    """

    target: str | None = None  # inf2 | trn1 | trn1n | trn2; Neuron only
    auto_cast: str = "auto"  # auto | none | matmult | all
    auto_cast_type: str = "bf16"  # used only when auto_cast is matmult or all
    optlevel: int = 2
    extra_args: tuple[str, ...] = field(default_factory=tuple)  # passed to the compiler verbatim
    lnc: int | None = None  # trn2's logical NeuronCore config, 1 or 2; None: the compiler's default (2)

    def __post_init__(self) -> None:
        if self.target is not None and self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.auto_cast not in AUTO_CASTS:
            raise ConfigError(f"unknown auto-cast {self.auto_cast!r}; choose one of {', '.join(AUTO_CASTS)}")
        if self.auto_cast_type not in AUTO_CAST_TYPES:
            raise ConfigError(f"unknown auto-cast type {self.auto_cast_type!r}; "
                              f"choose one of {', '.join(AUTO_CAST_TYPES)}")
        if isinstance(self.optlevel, bool) or self.optlevel not in (1, 2, 3):
            raise ConfigError(f"optlevel {self.optlevel!r} must be 1, 2 or 3")
        if self.lnc is not None and (isinstance(self.lnc, bool) or self.lnc not in (1, 2)):
            raise ConfigError(f"lnc {self.lnc!r} must be 1 or 2 (trn2's logical NeuronCore config)")
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    @property
    def precision(self) -> str:
        """fp32, or the type matmuls are cast to ("auto" until select_backend resolves it)."""
        if self.auto_cast == "auto":
            return "auto"
        return "fp32" if self.auto_cast == "none" else self.auto_cast_type

    def replace(self, **changes: Any) -> CompileOptions:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The options as the manifest and the cache key record them; lnc only when set, so artifacts
        compiled before it existed keep their cache key."""
        recorded = {"target": self.target, "auto_cast": self.auto_cast, "auto_cast_type": self.auto_cast_type,
                    "optlevel": self.optlevel, "extra_args": list(self.extra_args)}
        return recorded if self.lnc is None else {**recorded, "lnc": self.lnc}


class ProcessSetting:
    """A process-wide torch switch that loaded buckets need: set when the first holder acquires it,
    restored to what it was when the last one releases it, so loading an artifact leaves no trace."""

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None], value: Any) -> None:
        self._read, self._write, self._value = read, write, value
        self._holders, self._saved = 0, None
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._saved = self._read()
                self._write(self._value)
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders == 0:
                self._write(self._saved)


class LoadedBucket:
    """A loaded TorchScript bucket that holds a process setting while it is open; close() frees both.

    cores: the NeuronCores (relative to the visible ones) its copies hold; empty off Neuron.
    """

    cores: tuple[int, ...] = ()

    def __init__(self, module: BucketModel, setting: ProcessSetting | None = None) -> None:
        self.module = module
        self._setting = setting
        if setting is not None:
            setting.acquire()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module(*inputs)

    def close(self) -> None:
        if self._setting is not None:
            self._setting.release()
            self._setting = None
        self.module = _closed


def _closed(*inputs: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("this compiled model was closed")


class Backend:
    """A compile target. Subclasses set name, and implement unavailable_reason, run_problem, compile
    and load; every backend saves TorchScript, so save is shared."""

    name: str
    suffix = ".pt"  # file name ending of a saved bucket
    fixed_shapes = True  # compiled code runs only its bucket's shape: the runtime pads inputs to it

    def unavailable_reason(self, options: CompileOptions) -> str | None:
        """Why this backend cannot compile here with these options, or None."""
        raise NotImplementedError

    def run_problem(self) -> str | None:
        """Why this host cannot run what the backend compiles (gate, benchmark, serve), or None."""
        raise NotImplementedError

    def can_run(self, options: CompileOptions) -> bool:
        """Whether this host can run what `options` compile (the numerics gate runs it here, or not)."""
        return self.run_problem() is None

    def resolve_options(self, options: CompileOptions) -> CompileOptions:
        """`options` with what this backend infers made explicit (Neuron: the target), so the manifest
        and the cache key record it; a ConfigError for options this backend refuses."""
        return options

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, log_dir: Path) -> torch.nn.Module:
        """Compile `model` for exactly the shapes of `example`; an external compiler's log and command
        go to `log_dir`, which the artifact keeps (its work files do not belong there)."""
        raise NotImplementedError

    def save(self, compiled: torch.nn.Module, path: Path) -> None:
        torch.jit.save(compiled, str(path))

    def load(self, path: Path, precision: str, replicas: int = 1, start_core: int = 0) -> LoadedBucket:
        """Load a saved bucket compiled in `precision`, ready to run. Neuron: one copy on each of the
        visible NeuronCores start_core .. start_core + replicas - 1; elsewhere both are ignored."""
        raise NotImplementedError

    def check_artifact(self, manifest: dict[str, Any]) -> list[str]:
        """Warnings about running `manifest`'s artifact on this host; an ArtifactError where it cannot run."""
        return []

    def target(self, options: CompileOptions) -> str | None:
        """The hardware family the compiled code is for (Neuron: inf2, trn1, ...); None elsewhere."""
        return None

    def compiler_args(self, options: CompileOptions) -> list[str] | None:
        """The flags handed to an external compiler, for the manifest; None when there is none."""
        return None

    def versions(self) -> dict[str, str | None]:
        """Versions of the software whose change calls for a recompile."""
        return {}


class WithDtype(torch.nn.Module):
    """The encoder in a precision and on a device, returning fp32 so every backend compares alike.

    A copy whenever the precision or the device changes: the caller's fp32 CPU model stays as it is.
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, device: str = "cpu") -> None:
        super().__init__()
        same = dtype == torch.float32 and device == "cpu"
        self.model = model if same else copy.deepcopy(model).to(device=device, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask, token_type_ids).float()


def trace_and_freeze(model: torch.nn.Module, example: tuple[torch.Tensor, ...], dtype: torch.dtype,
                     device: str = "cpu") -> torch.nn.Module:
    """The CPU and CUDA artifact: `model` traced in `dtype` on `device`, then frozen, which folds the
    weights into the graph as constants, so the file is self-contained and loads without our code."""
    module = WithDtype(model, dtype, device).eval()
    with torch.inference_mode(False), torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(module, tuple(t.to(device) for t in example)))

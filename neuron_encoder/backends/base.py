"""What every backend provides: compile one bucket, save it, load it, say whether it can run here."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from ..errors import ConfigError

TARGETS = ("inf2", "trn1", "trn1n", "trn2")
AUTO_CASTS = ("none", "matmult", "all")  # the compiler's own spelling: matmult
AUTO_CAST_TYPES = ("bf16", "fp16", "tf32", "fp8_e4m3")

# A compiled bucket: called with (input_ids, attention_mask, token_type_ids), returns (B, T, H).
Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CompileOptions:
    """How to compile, in neuronx-cc's vocabulary; CPU and CUDA read the precision from it."""

    target: str | None = None  # inf2 | trn1 | trn1n | trn2; Neuron only
    auto_cast: str = "none"  # none | matmult | all
    auto_cast_type: str = "bf16"  # used only when auto_cast is not none
    optlevel: int = 2
    extra_args: tuple[str, ...] = field(default_factory=tuple)  # passed to the compiler verbatim

    def __post_init__(self) -> None:
        if self.target is not None and self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.auto_cast not in AUTO_CASTS:
            raise ConfigError(f"unknown auto-cast {self.auto_cast!r}; choose one of {', '.join(AUTO_CASTS)}")
        if self.auto_cast_type not in AUTO_CAST_TYPES:
            raise ConfigError(f"unknown auto-cast type {self.auto_cast_type!r}; "
                              f"choose one of {', '.join(AUTO_CAST_TYPES)}")
        if self.optlevel not in (1, 2, 3):
            raise ConfigError(f"optlevel {self.optlevel} must be 1, 2 or 3")

    @property
    def precision(self) -> str:
        """fp32, or the type matmuls are cast to."""
        return "fp32" if self.auto_cast == "none" else self.auto_cast_type


class Backend(Protocol):
    name: str
    suffix: str  # file name ending of a saved bucket

    def unavailable_reason(self, options: CompileOptions) -> str | None:
        """Why this backend cannot compile here with these options, or None."""

    def can_run(self) -> bool:
        """Whether this host can execute what the backend compiles (for the numerics gate)."""

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, workdir: Path) -> torch.nn.Module:
        """Compile `model` for exactly the shapes of `example`."""

    def save(self, compiled: torch.nn.Module, path: Path) -> None: ...

    def load(self, path: Path, replicas: int = 1) -> Runner:
        """Load a saved bucket, ready to run (on `replicas` devices where that applies)."""

    def versions(self) -> dict[str, str | None]:
        """Versions of the software whose change calls for a recompile."""


class WithDtype(torch.nn.Module):
    """A copy of the encoder in another precision, returning fp32 so every backend compares alike."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(dtype)  # a copy: the caller's fp32 model stays as it is

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask, token_type_ids).float()

"""The CPU: a traced, frozen TorchScript module (loads without our Python model code)."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import hardware
from .base import CompileOptions, Runner, WithDtype

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "tf32": torch.float32}


class CpuBackend:
    name = "cpu"
    suffix = ".pt"

    def unavailable_reason(self, options: CompileOptions) -> str | None:
        if options.precision not in DTYPES:
            return (f"auto-cast type {options.auto_cast_type} is not available on the CPU "
                    f"(use --auto-cast none, or --auto-cast-type bf16)")
        return None

    def can_run(self) -> bool:
        return True

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, workdir: Path) -> torch.nn.Module:
        wrapped = WithDtype(model, DTYPES[options.precision]).eval()
        with torch.no_grad():
            # Freezing folds the weights into the graph as constants, so the saved file is
            # self-contained and the JIT can pre-pack them for oneDNN.
            return torch.jit.freeze(torch.jit.trace(wrapped, example))

    def save(self, compiled: torch.nn.Module, path: Path) -> None:
        torch.jit.save(compiled, str(path))

    def load(self, path: Path, replicas: int = 1) -> Runner:
        return torch.jit.load(str(path), map_location="cpu").eval()

    def versions(self) -> dict[str, str | None]:
        return {"cpu": hardware.cpu_model()}

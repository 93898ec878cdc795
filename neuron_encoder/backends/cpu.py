"""The CPU: a traced, frozen TorchScript module (loads without our Python model code).

Loading turns on TorchScript's oneDNN fuser, a process-wide switch: it fuses each linear with its
bias, GELU or residual add into one oneDNN kernel after a couple of profiling runs, 0.84-0.86x the
latency of ONNX Runtime fp32 on bert-base here, against 0.95-0.99x without it
(benchmarks/cpu_peers.py). The fuser is known to crash on graphs that went through
torch.jit.optimize_for_inference, so artifacts are only traced and frozen.
"""

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
        torch.jit.enable_onednn_fusion(True)
        return torch.jit.load(str(path), map_location="cpu").eval()

    def versions(self) -> dict[str, str | None]:
        return {"cpu": hardware.cpu_model()}

"""The CPU: a traced, frozen TorchScript module (loads without our Python model code).

Loaded buckets run with TorchScript's oneDNN fuser on, a process-wide switch held while any CPU
bucket is open and restored after the last one closes: it fuses each linear with its bias, GELU or
residual add into one oneDNN kernel after a couple of profiling runs (benchmarks/cpu_peers.py
measures what it buys). The fuser is known to crash on graphs that went through
torch.jit.optimize_for_inference, so artifacts are only traced and frozen.

Auto-cast on the CPU casts the whole model (weights and activations): `matmult` and `all` are the
same here. tf32 is a matmul mode of GPUs and NeuronCores; the CPU has none, so it is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import hardware
from .base import Backend, CompileOptions, LoadedBucket, ProcessSetting, trace_and_freeze

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

ONEDNN_FUSION = ProcessSetting(torch._C._jit_llga_enabled, torch.jit.enable_onednn_fusion, True)


class CpuBackend(Backend):
    name = "cpu"

    def unavailable_reason(self, options: CompileOptions) -> str | None:
        if options.precision not in DTYPES:
            return (f"auto-cast type {options.auto_cast_type} is not available on the CPU "
                    "(use --auto-cast none for fp32, or --auto-cast-type bf16)")
        return None

    def run_problem(self) -> str | None:
        return None

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, log_dir: Path) -> torch.nn.Module:
        return trace_and_freeze(model, example, DTYPES[options.precision])

    def load(self, path: Path, precision: str, replicas: int = 1, start_core: int = 0) -> LoadedBucket:
        return LoadedBucket(torch.jit.load(str(path), map_location="cpu").eval(), ONEDNN_FUSION)

    def versions(self) -> dict[str, str | None]:
        return {"cpu": hardware.cpu_model()}

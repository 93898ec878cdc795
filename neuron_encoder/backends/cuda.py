"""NVIDIA GPUs: a traced TorchScript module on the GPU, fp32 or cast to fp16/bf16 as auto-cast asks."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import hardware
from .base import CompileOptions, Runner, WithDtype

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32}


class CudaBackend:
    name = "cuda"
    suffix = ".pt"

    def unavailable_reason(self, options: CompileOptions) -> str | None:
        if not hardware.is_cuda_available():
            return "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
        if options.precision not in DTYPES:
            return f"auto-cast type {options.auto_cast_type} has no CUDA equivalent here"
        return None

    def can_run(self) -> bool:
        return hardware.is_cuda_available()

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, workdir: Path) -> torch.nn.Module:
        torch.backends.cuda.matmul.allow_tf32 = options.precision == "tf32"
        gpu_model = WithDtype(model, DTYPES[options.precision]).cuda().eval()
        with torch.inference_mode(False), torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(gpu_model, tuple(t.cuda() for t in example)))

    def save(self, compiled: torch.nn.Module, path: Path) -> None:
        torch.jit.save(compiled, str(path))

    def load(self, path: Path, replicas: int = 1) -> Runner:
        module = torch.jit.load(str(path), map_location="cuda")

        def run(*inputs: torch.Tensor) -> torch.Tensor:
            # .cpu() waits for the GPU: the caller's timer sees the whole computation.
            return module(*(t.cuda(non_blocking=True) for t in inputs)).cpu()
        return run

    def versions(self) -> dict[str, str | None]:
        return {"cuda": torch.version.cuda}

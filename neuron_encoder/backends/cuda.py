"""NVIDIA GPUs: a traced, frozen TorchScript module on the GPU, fp32 or cast to fp16/bf16.

tf32 artifacts are fp32 graphs run with TF32 matmuls: a process-wide switch, held while such a
bucket is open (compile included) and restored after, so a fresh process runs them as compiled.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import hardware
from .base import Backend, CompileOptions, LoadedBucket, ProcessSetting, trace_and_freeze

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32}


def _set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on


TF32 = ProcessSetting(lambda: torch.backends.cuda.matmul.allow_tf32, _set_tf32, True)  # the process's one switch


class CudaBackend(Backend):
    """`tf32`: the switch tf32 buckets hold; every backend shares the process's (TF32), so that its holders
    are counted together; a test can pass its own."""

    name = "cuda"

    def __init__(self, tf32: ProcessSetting = TF32) -> None:
        self.tf32 = tf32

    def unavailable_reason(self, options: CompileOptions) -> str | None:
        problem = self.run_problem()
        if problem:
            return problem
        if options.precision not in DTYPES:
            return f"auto-cast type {options.auto_cast_type} has no CUDA equivalent here"
        if options.precision == "bf16" and not hardware.cuda_bf16_supported():
            return "this GPU has no bf16 support (use --auto-cast-type fp16)"
        return None

    def run_problem(self) -> str | None:
        if not hardware.is_cuda_available():
            return "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
        return None

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, log_dir: Path) -> torch.nn.Module:
        setting = self.tf32 if options.precision == "tf32" else None
        if setting:
            setting.acquire()
        try:
            return trace_and_freeze(model, example, DTYPES[options.precision], device="cuda")
        finally:
            if setting:
                setting.release()

    def load(self, path: Path, precision: str, replicas: int = 1, start_core: int = 0) -> LoadedBucket:
        module = torch.jit.load(str(path), map_location="cuda")
        return LoadedBucket(lambda *inputs: run_on_gpu(module, inputs), self.tf32 if precision == "tf32" else None)

    def versions(self) -> dict[str, str | None]:
        return {"cuda": torch.version.cuda}


def run_on_gpu(module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Run on the GPU from host tensors; .cpu() waits for the kernels, so a caller's timer sees them."""
    return module(*(t.cuda(non_blocking=True) for t in inputs)).cpu()

"""The CPU's other runtimes: ONNX Runtime and OpenVINO on the same weights, for the benchmark.

A user who serves an encoder on a CPU picks a runtime for speed, most often OpenVINO (optimum-intel;
bf16 by default on CPUs with AVX512-BF16 or AMX), then ONNX Runtime. A CPU row slower than theirs
would flatter Neuron, so the benchmark races them. The encoder is exported once with torch.onnx
(dynamic batch and length) and both runtimes load that file: ONNX Runtime with every graph
optimisation (its CPU provider computes in fp32 only on x86), OpenVINO at its own default precision
for this CPU or at fp32. Each is imported only here, when asked for: `pip install 'neuron-encoder[cpu-peers]'`.
"""

from __future__ import annotations

import functools
import importlib.util
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from neuron_encoder.errors import BackendUnavailable
from neuron_encoder.model import Encoder

INSTALL_HINT = "pip install 'neuron-encoder[cpu-peers]'"
PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}  # runtime -> imports needed
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPENVINO_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # its element types -> our names

Run = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def missing(runtime: str) -> str | None:
    """Why `runtime` cannot run here (a package is not installed, with the install hint), or None."""
    absent = [name for name in PACKAGES[runtime] if importlib.util.find_spec(name) is None]
    return f"{', '.join(absent)} not installed: {INSTALL_HINT}" if absent else None


def require(runtime: str) -> None:
    problem = missing(runtime)
    if problem:
        raise BackendUnavailable(f"{runtime} cannot run here: {problem}")


@functools.lru_cache(maxsize=None)
def openvino_default_precision() -> str:
    """The precision OpenVINO computes in on this CPU when its user sets none (bf16 with AMX or AVX512-BF16)."""
    require("openvino")
    import openvino as ov
    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return OPENVINO_PRECISIONS.get(hint.get_type_name(), str(hint))


def export_onnx(encoder: Encoder, path: Path) -> Path:
    """The (fp32) encoder as ONNX at `path`: hidden states (B, T, H), batch and length dynamic.

    The written-out attention is exported: both runtimes fuse its matmul-softmax-matmul pattern,
    which is also what Hugging Face's exports give them."""
    model = encoder.with_fused_attention(False).eval()  # shares the weights: no copy
    example = tuple(torch.ones(1, 8, dtype=torch.long) for _ in INPUTS)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are dynamic axes, as intended
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=17, input_names=list(INPUTS),
                          output_names=["last_hidden_state"],
                          dynamic_axes={name: {0: "batch", 1: "seq"} for name in (*INPUTS, "last_hidden_state")})
    return path


class OnnxExport:
    """One export shared by every peer engine of a benchmark, made when the first one is built."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._directory: tempfile.TemporaryDirectory | None = None  # removed with this object
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        with self._lock:
            if self._directory is None:
                self._directory = tempfile.TemporaryDirectory(prefix="neuron-encoder-onnx-")
                export_onnx(self.encoder, Path(self._directory.name) / "encoder.onnx")
            return Path(self._directory.name) / "encoder.onnx"


def _feed(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> dict:
    return {name: np.ascontiguousarray(t.numpy(), dtype=np.int64)
            for name, t in zip(INPUTS, (input_ids, attention_mask, token_type_ids))}


def onnxruntime_run(path: Path, threads: int, spin: bool = True) -> tuple[Run, str]:
    """ONNX Runtime's CPU session for the export, with every graph optimisation; (run, version).

    spin=False stops its threads spinning after a call (its default keeps them busy-waiting, which
    steals the cores from whatever runs next: wanted when candidates are interleaved)."""
    require("onnxruntime")
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(input_ids, attention_mask, token_type_ids):
        return torch.from_numpy(session.run(None, _feed(input_ids, attention_mask, token_type_ids))[0])
    return run, ort.__version__


def openvino_run(path: Path, threads: int, precision: str | None = None) -> tuple[Run, str, str]:
    """OpenVINO's CPU plugin compiling the export; (run, precision it computes in, version).

    precision None is OpenVINO's default for this CPU; another is asked for with its inference
    precision hint, and refused when OpenVINO would compute in something else."""
    require("openvino")
    import openvino as ov
    core = ov.Core()
    config: dict = {"INFERENCE_NUM_THREADS": threads}
    if precision is not None:
        wanted = {ours: theirs for theirs, ours in OPENVINO_PRECISIONS.items()}[precision]
        config["INFERENCE_PRECISION_HINT"] = wanted
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    used = OPENVINO_PRECISIONS.get(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(), "?")
    if precision is not None and used != precision:
        raise BackendUnavailable(f"OpenVINO computes in {used} on this CPU, not {precision}")
    local = threading.local()  # an infer request serves one call at a time: one per calling thread

    def run(input_ids, attention_mask, token_type_ids):
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        request.infer(_feed(input_ids, attention_mask, token_type_ids))
        return torch.from_numpy(request.get_output_tensor(0).data.copy())  # the request reuses its buffer
    return run, used, ov.__version__

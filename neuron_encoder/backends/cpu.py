"""The CPU: the encoder's weights in one file, run with oneDNN's prepacked linears.

Every linear (W_Q/W_K/W_V, W_O, the feed-forward pair) is reordered once, at load, into oneDNN's
blocked layout, and the feed-forward's GELU runs inside its first matmul: on an AMD EPYC (AVX2)
oneDNN ran these matmuls at 69 GFLOP/s against MKL's 45, and the packed bert-base runs at ONNX
Runtime's speed (1.04x at batch 1, 0.97x at batch 8; benchmarks/cpu_peers.py), as fast as the
frozen TorchScript graphs with the oneDNN fuser that CPU artifacts were before. Unlike those it
stores the weights once, not once per bucket, needs no process-wide fuser switch, and runs any
shape, so the runtime pads nothing to buckets on the CPU. Packed oneDNN weights cannot be
serialised, so they are built at load.

Auto-cast on the CPU casts the whole model (weights and activations): `matmult` and `all` are the
same here. tf32 is a matmul mode of GPUs and NeuronCores; the CPU has none, so it is refused.
Where oneDNN cannot pack (a torch build without mkldnn; bf16 on a CPU without AVX512 or
AVX-NE-CONVERT) the linears run unpacked, correctly but slower.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .. import hardware
from ..config import EncoderConfig
from ..model import Encoder
from .base import Backend, CompileOptions, LoadedBucket, WithDtype

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
WEIGHTS = "weights.safetensors"  # beside the descriptor
PACK_ROWS = 128  # oneDNN's packing hint (rows of the activations); measured to matter little


class PackedLinear(nn.Module):
    """An nn.Linear whose weight oneDNN reordered once; `activation` runs fused into the matmul."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_ROWS)
        self.bias = linear.bias.detach()
        # oneDNN's names: gelu with algorithm "none" is the exact erf GELU, "tanh" the approximation.
        self.activation, self.algorithm = {"none": ("none", ""), "gelu": ("gelu", "none"),
                                           "gelu_tanh": ("gelu", "tanh"), "relu": ("relu", "")}[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], self.algorithm)


def pack_linears(encoder: Encoder, precision: str) -> Encoder:
    """`encoder` (changed in place) with every linear prepacked and the feed-forward activation fused,
    where oneDNN can pack that precision here; unchanged elsewhere."""
    if not hardware.onednn_packs(precision):
        return encoder
    for layer in encoder.layers:
        attention, feed_forward = layer.attention, layer.feed_forward
        attention.qkv, attention.out = PackedLinear(attention.qkv), PackedLinear(attention.out)
        feed_forward.up = PackedLinear(feed_forward.up, encoder.config.hidden_act)
        feed_forward.activation = nn.Identity()
        feed_forward.down = PackedLinear(feed_forward.down)
    return encoder


class CpuProgram:
    """What a CPU "compile" produces: the model to save (nothing is compiled ahead of time)."""

    def __init__(self, model: Encoder, precision: str) -> None:
        self.model, self.precision = model, precision


class CpuBackend(Backend):
    name = "cpu"
    suffix = ".json"  # the program is a small descriptor; the weights live beside it in WEIGHTS
    fixed_shapes = False  # the packed model runs any shape: one program serves every bucket, unpadded

    def unavailable_reason(self, options: CompileOptions) -> str | None:
        if options.precision not in DTYPES:
            return (f"auto-cast type {options.auto_cast_type} is not available on the CPU "
                    "(use --auto-cast none for fp32, or --auto-cast-type bf16)")
        return None

    def run_problem(self) -> str | None:
        return None

    def compile(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...],
                options: CompileOptions, log_dir: Path) -> CpuProgram:
        return CpuProgram(model, options.precision)

    def save(self, compiled: CpuProgram, path: Path) -> None:
        """The descriptor at `path`, and the weights beside it."""
        from safetensors.torch import save_file
        state = {name: t.detach().contiguous() for name, t in compiled.model.state_dict().items()}
        save_file(state, str(path.with_name(WEIGHTS)))
        path.write_text(json.dumps({"weights": WEIGHTS, "precision": compiled.precision,
                                    "config": compiled.model.config.to_dict()}, sort_keys=True))

    def load(self, path: Path, precision: str, replicas: int = 1, start_core: int = 0) -> LoadedBucket:
        descriptor = json.loads(Path(path).read_text())
        return LoadedBucket(_packed_model(Path(path).with_name(descriptor["weights"]), descriptor["config"],
                                          descriptor["precision"]))

    def versions(self) -> dict[str, str | None]:
        return {"cpu": hardware.cpu_model(), "onednn": str(torch.backends.mkldnn.is_available())}


def _packed_model(weights: Path, config: dict, precision: str) -> nn.Module:
    """The packed model of a weights file (the runtime loads it once for every bucket)."""
    from safetensors.torch import load_file
    encoder = Encoder(EncoderConfig.from_dict(config))
    encoder.load_state_dict(load_file(str(weights)), strict=True)
    packed = pack_linears(encoder.to(DTYPES[precision]).eval(), precision)
    return WithDtype(packed, torch.float32).eval()  # no copy: only its outputs become fp32

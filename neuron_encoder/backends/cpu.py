"""The CPU: the encoder's weights in one file, run with oneDNN's prepacked linears and fused epilogues.

Every linear (W_Q/W_K/W_V, W_O, the feed-forward pair) is reordered once, at load, into oneDNN's blocked
layout; the feed-forward's GELU runs inside its first matmul, and each residual add inside the matmul
that ends its sublayer (W_O, the down projection), so a layer makes two passes fewer over the
activations. On an AMD EPYC (AVX2) oneDNN ran these matmuls at 69 GFLOP/s against MKL's 45; on a 2-vCPU
Intel Xeon with AMX the fused bf16 bert-base ran at 1.02x OpenVINO's bf16 time at batch 1 and 0.93x at
batch 8, and 1.07x and 1.04x in fp32 (benchmarks/cpu_peers.py). Unlike the TorchScript graphs CPU
artifacts were before, it stores the weights once, not once per bucket, needs no process-wide fuser
switch, and runs any shape, so the runtime pads nothing to buckets on the CPU. Packed oneDNN weights
cannot be serialised, so they are built at load.

Auto-cast on the CPU casts the whole model (weights and activations): `matmult` and `all` are the
same here. tf32 is a matmul mode of GPUs and NeuronCores; the CPU has none, so it is refused.
Where oneDNN cannot pack (a torch build without mkldnn or without the private mkldnn ops; bf16 on a
CPU without AVX512 or AVX-NE-CONVERT) the same fused layers run torch's linears, correctly but slower.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import hardware
from ..config import EncoderConfig
from ..model import Encoder, EncoderLayer
from .base import Backend, CompileOptions, LoadedBucket, WithDtype

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
WEIGHTS = "weights.safetensors"  # beside the descriptor
PACK_ROWS = 128  # oneDNN's packing hint (rows of the activations); on AMX hints 2-128 gave one layout, 1 another
# The matmuls that end a sublayer with its residual add (W_O, the down projection) have a plan for calls of
# more than ROW_BLOCK rows, timed at load (many_rows_plan): "whole", "blocks" (equal blocks of at most
# ROW_BLOCK rows, each whole) or "wide" (a second packing, made with the hint WIDE_PACK_ROWS). On a 2-vCPU
# Xeon with AMX, oneDNN ran bert-base's bf16 down projection at ~1,900 GFLOP/s on 256 rows and at ~1,000
# on 512 to 1,024 rows in its usual layout (32-column blocks); in the layout it picks for one row (64-column
# blocks) it kept ~1,950 on 512 rows and up, but took bert-base at batch 1 (128 rows) from 25.1 to 26.9 ms,
# so calls of up to ROW_BLOCK rows keep the usual layout. bf16 bert-base at batch 8 x 128, one interleaved
# run: 176 ms whole, 144 in blocks, 130 wide. all-MiniLM-L6-v2 ran slower in blocks (27 against 20 ms at
# 32 x 32), and fp32 ran fastest whole: where each plan pays depends on the CPU and the shape.
ROW_BLOCK = 256
WIDE_PACK_ROWS = 1
PLAN_PAYS = 0.9  # blocks or wide must be this much faster than whole to be used: timings on a busy host wobble
ONEDNN_ACTIVATIONS = {"none": ("none", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"),
                      "relu": ("relu", "")}  # ours -> oneDNN's (gelu "none" is the exact erf GELU)
TORCH_ACTIVATIONS = {"none": lambda y: y, "gelu": F.gelu, "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
                     "relu": F.relu}


class FusedLinear(nn.Module):
    """x W^T + b, then `activation` or `+ residual`, in one oneDNN matmul on a weight reordered once
    into its blocked layout (packed=True); torch's linear followed by the same epilogue otherwise.
    `many_rows` is how calls of more than ROW_BLOCK rows run (see ROW_BLOCK); FusedLayer plans it.

    The packed form uses torch's private mkldnn ops, which any torch may drop or change: onednn_packs
    probes them once, and the plain form runs wherever they are missing."""

    def __init__(self, linear: nn.Linear, activation: str = "none", packed: bool = True) -> None:
        super().__init__()
        self.dense_weight = linear.weight.detach()  # kept only until the plan is made (plan_many_rows)
        self.packed = packed
        self.weight = self.pack(PACK_ROWS) if packed else self.dense_weight
        self.bias = linear.bias.detach()
        self.activation_name = activation
        self.activation, self.algorithm = ONEDNN_ACTIVATIONS[activation]
        self.many_rows, self.wide_weight = "whole", None

    def pack(self, rows_hint: int) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(self.dense_weight, rows_hint)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows <= ROW_BLOCK or self.many_rows == "whole":
            return self._matmul(x, residual, self.weight)
        if self.many_rows == "wide":
            return self._matmul(x, residual, self.wide_weight)
        pieces = -(-rows // ROW_BLOCK)
        step = -(-rows // pieces)  # equal blocks: 1,024 rows are four of 256, 600 are two of 300
        flat, flat_residual = x.reshape(rows, -1), None if residual is None else residual.reshape(rows, -1)
        blocks = [self._matmul(flat[s:s + step], None if flat_residual is None else flat_residual[s:s + step],
                               self.weight) for s in range(0, rows, step)]
        return torch.cat(blocks).view(*x.shape[:-1], -1)

    def _matmul(self, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            y = TORCH_ACTIVATIONS[self.activation_name](F.linear(x, weight, self.bias))
            return y if residual is None else y + residual
        if residual is not None:  # the residual stream is added inside the matmul: one pass less over it
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, self.bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, weight, self.bias, self.activation, [], self.algorithm)


class FusedLayer(nn.Module):
    """An EncoderLayer with its four linears fused: the feed-forward activation runs in its first
    matmul, and each residual add in the matmul that ends its sublayer (W_O, the down projection).
    The same arithmetic as EncoderLayer.forward, in fewer passes over the activations."""

    def __init__(self, layer: EncoderLayer, activation: str, packed: bool) -> None:
        super().__init__()
        self.norm_first = layer.norm_first
        self.attention = layer.attention
        self.attention_norm, self.feed_forward_norm = layer.attention_norm, layer.feed_forward_norm
        self.attention.qkv = FusedLinear(self.attention.qkv, packed=packed)
        self.attention.out = FusedLinear(self.attention.out, packed=packed)
        self.up = FusedLinear(layer.feed_forward.up, activation, packed)
        self.down = FusedLinear(layer.feed_forward.down, packed=packed)
        for ends_sublayer in (self.attention.out, self.down) if packed else ():
            plan_many_rows(ends_sublayer)
        for linear in (self.attention.qkv, self.attention.out, self.up, self.down):
            linear.dense_weight = None  # the packed weights are all the layer runs on from here

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if self.norm_first:
            x = self.attention.out(self.attention.heads(self.attention_norm(x), keep), x)
            return self.down(self.up(self.feed_forward_norm(x)), x)
        x = self.attention_norm(self.attention.out(self.attention.heads(x, keep), x))
        return self.feed_forward_norm(self.down(self.up(x), x))


_MANY_ROWS: dict[tuple, str] = {}  # (out, in, dtype, threads) -> what many_rows_plan found, once per process


def plan_many_rows(linear: FusedLinear) -> None:
    """Sets how `linear` (packed, with its dense weight still there) runs calls of more than ROW_BLOCK
    rows: timed once per shape, dtype and thread count (many_rows_plan), since which plan pays depends
    on all three and on the CPU (see ROW_BLOCK). A wide packing is made only where it is used."""
    key = (linear.bias.shape[0], linear.dense_weight.shape[1], linear.bias.dtype, torch.get_num_threads())
    if key not in _MANY_ROWS:
        _MANY_ROWS[key] = many_rows_plan(linear)
    linear.many_rows = _MANY_ROWS[key]
    linear.wide_weight = linear.pack(WIDE_PACK_ROWS) if linear.many_rows == "wide" else None


def many_rows_plan(linear: FusedLinear) -> str:
    """Each plan on 2 and 4 x ROW_BLOCK random rows with a residual, the best of three calls each after a
    warm-up, summed; the fastest of "blocks" and "wide" is used where it beats "whole" by PLAN_PAYS."""
    out_features, in_features = linear.dense_weight.shape
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        inputs = [(torch.randn(n * ROW_BLOCK, in_features).to(linear.bias.dtype),
                   torch.randn(n * ROW_BLOCK, out_features).to(linear.bias.dtype)) for n in (2, 4)]
        linear.wide_weight = linear.pack(WIDE_PACK_ROWS)

        def seconds(plan: str) -> float:
            linear.many_rows, total = plan, 0.0
            for x, residual in inputs:
                times = []
                for _ in range(4):
                    start = time.perf_counter()
                    linear(x, residual)
                    times.append(time.perf_counter() - start)
                total += min(times[1:])
            return total

        try:
            times = {plan: seconds(plan) for plan in ("whole", "blocks", "wide")}
        finally:
            linear.many_rows, linear.wide_weight = "whole", None
    fastest = min(("blocks", "wide"), key=times.get)
    return fastest if times[fastest] < PLAN_PAYS * times["whole"] else "whole"


@functools.lru_cache(maxsize=None)
def onednn_packs(precision: str) -> bool:
    """Whether torch's private mkldnn ops (_reorder_linear_weight, _linear_pointwise and its binary
    form, _is_mkldnn_bf16_supported) exist and agree with torch's linear in `precision` here; probed
    once, on a small linear, since a torch above 2.2 may have dropped or changed any of them."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if precision == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False  # bf16 packing needs AVX512 or AVX-NE-CONVERT
        with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
            linear = nn.Linear(16, 8).to(DTYPES[precision])
            x = torch.randn(2, 3, 16).to(DTYPES[precision])
        packed, plain = FusedLinear(linear, "gelu"), FusedLinear(linear, "gelu", packed=False)
        fused, unfused = FusedLinear(linear), FusedLinear(linear, packed=False)
        with torch.inference_mode():
            agree = torch.allclose(packed(x).float(), plain(x).float(), atol=0.05) and torch.allclose(
                fused(x, plain(x)).float(), unfused(x, plain(x)).float(), atol=0.05)
    except (AttributeError, RuntimeError, TypeError):  # an op missing, or with another signature
        return False
    return agree


def fuse_layers(encoder: Encoder, precision: str) -> Encoder:
    """`encoder` (changed in place) with every layer a FusedLayer: prepacked by oneDNN where its
    private ops run here in `precision` (onednn_packs), with torch's linears elsewhere."""
    packed = onednn_packs(precision)
    encoder.layers = nn.ModuleList(FusedLayer(layer, encoder.config.hidden_act, packed) for layer in encoder.layers)
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
    packed = fuse_layers(encoder.to(DTYPES[precision]).eval(), precision)
    return WithDtype(packed, torch.float32).eval()  # no copy: only its outputs become fp32

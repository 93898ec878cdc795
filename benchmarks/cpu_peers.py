"""Our CPU artifacts against the CPU's other runtimes on the same weights, side by side in one run.

bert-base (random weights, seed 0), sequence 128, batch 1 and 8. Candidates: ONNX Runtime fp32
(its x86 CPU provider has no bf16 compute), OpenVINO fp32 and at its default precision for this CPU
(bf16 with AMX or AVX512-BF16), both loading one torch.onnx export (bench/peers.py, as the `bench`
engines do), our fp32 artifact, and our bf16 artifact where the CPU has native bf16, each through
the numerics gate. The host's GEMM rate in bf16 and fp32 (torch.mm at bert-base's feed-forward shape,
one batch of 8 x 128 rows) is the ceiling each candidate's GFLOP/s is set against. Candidates and
GEMMs run interleaved (bench/compare.py); the whole race runs --runs times, and the table shows each
run's median and the median of runs, since a shared machine's noise is part of the figure.
On a host shared with other processes run it with OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads
otherwise spin after every parallel region, taking the cores from the candidate that runs next and,
when other processes want the cores too, from each other (measured on a 2-core Xeon with AMX under
load 6: our bf16 artifact 834 ms at batch 1 spinning, 41 ms passive; OpenVINO 224 and 144 ms).
ONNX Runtime's threads are told not to spin for the same reason. The header prints the policy.
Targets on a CPU with native bf16: our bf16 <= 0.95x OpenVINO's bf16 at batch 1 and 8, and >= 90% of
the bf16 GEMM rate at batch 8; on an fp32-only CPU our fp32 <= 1.0x the faster fp32 peer.
Usage: python benchmarks/cpu_peers.py [--runs 3] [--rounds 10] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from neuron_encoder import Encoder, hardware, load_compiled, preset
from neuron_encoder.backends import CompileOptions
from neuron_encoder.bench import peers
from neuron_encoder.bench.compare import compare
from neuron_encoder.compiler import compile_model
from neuron_encoder.config import EncoderConfig
from neuron_encoder.errors import NeuronEncoderError

GEMM_ROWS = 8 * 128  # a batch of 8 sequences of 128 tokens


def model_flops(config: EncoderConfig, batch: int, seq: int) -> float:
    """Multiply-adds x 2 of one forward: the four projections and the feed-forward pair, plus attention's
    two (T x T) products per head (embeddings, norms and softmax are negligible)."""
    h, i, rows = config.hidden_size, config.intermediate_size, batch * seq
    per_layer = 2 * rows * (4 * h * h + 2 * h * i) + 2 * 2 * batch * seq * seq * h
    return float(config.num_hidden_layers * per_layer)


def gemm(config: EncoderConfig, dtype: torch.dtype):
    """torch.mm at the feed-forward's first shape, and its FLOPs: the host's matmul rate in that dtype."""
    a = torch.randn(GEMM_ROWS, config.hidden_size).to(dtype)
    b = torch.randn(config.hidden_size, config.intermediate_size).to(dtype)
    return (lambda: torch.mm(a, b)), 2.0 * GEMM_ROWS * config.hidden_size * config.intermediate_size


def candidates_for(encoder: Encoder, batches: list[int], seq: int, work: Path) -> dict[str, object]:
    """Every runner that can run here, by name: (ids, mask, types) -> hidden states."""
    threads = torch.get_num_threads()
    export = peers.export_onnx(encoder, work / "encoder.onnx")
    runners: dict[str, object] = {}
    if not peers.missing("onnxruntime"):
        runners["onnxruntime-fp32"] = peers.onnxruntime_run(export, threads, spin=False)[0]
    if not peers.missing("openvino"):
        runners["openvino-fp32"] = peers.openvino_run(export, threads, "fp32")[0]
        run, default, _ = peers.openvino_run(export, threads)
        if default != "fp32":
            runners[f"openvino-{default}"] = run
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and not hardware.cpu_has_fast_bf16():
            print("ours-bf16 left out: this CPU has no native bf16 (the auto policy picks fp32 here)")
            continue
        options = CompileOptions(auto_cast="none" if precision == "fp32" else "matmult", auto_cast_type="bf16")
        try:
            path = compile_model(encoder, batch_sizes=batches, seq_lens=[seq], backend="cpu", options=options,
                                 out=work / precision, progress=print).path
        except NeuronEncoderError as error:  # failing the gate removes it from the race, loudly
            print(f"ours-{precision} excluded: {error}")
            continue
        runners[f"ours-{precision}"] = load_compiled(path)
    missing = [r for r in ("onnxruntime", "openvino") if peers.missing(r)]
    if missing:
        print(f"left out: {', '.join(missing)} ({peers.INSTALL_HINT})")
    return runners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    encoder = Encoder(preset("bert-base")).eval()
    config = encoder.config
    runners = candidates_for(encoder, batches, args.seq, Path(tempfile.mkdtemp(prefix="cpu-peers-")))
    gemms = {f"gemm-{name}": gemm(config, dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
             if name == "fp32" or hardware.cpu_has_fast_bf16()}

    runs: dict[tuple[int, str], list[float]] = {}  # (batch, candidate) -> each run's median ms
    for run in range(args.runs):
        for batch in batches:
            inputs = _inputs(batch, args.seq)
            race = {name: (lambda r=r: r(*inputs)) for name, r in runners.items()}
            race |= {name: fn for name, (fn, _) in gemms.items()}
            with torch.inference_mode():
                medians = compare(race, rounds=args.rounds, warmup=2)
            for name, ms in medians.items():
                runs.setdefault((batch, name), []).append(ms)
        print(f"  run {run + 1} of {args.runs} done", flush=True)

    print(f"\nbert-base on {hardware.cpu_model()} ({torch.get_num_threads()} threads; native bf16: "
          f"{'yes' if hardware.cpu_has_fast_bf16() else 'no'}; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset (torch threads spin)')}), seq {args.seq}, "
          "median of interleaved rounds per run")
    ceiling = {name: flops / (statistics.median(ms for b in batches for ms in runs[(b, name)]) * 1e6)
               for name, (_, flops) in gemms.items()}
    print("host GEMM rate (torch.mm, 1024x768 @ 768x3072): "
          + ", ".join(f"{name[5:]} {rate:.0f} GFLOP/s" for name, rate in ceiling.items()))
    header = " | ".join(f"batch {b}: ms (each run) | median | GFLOP/s | % of GEMM | ratio" for b in batches)
    print(f"| candidate | {header} |")
    for name in runners:
        cells = []
        for batch in batches:
            ms = statistics.median(runs[(batch, name)])
            rate = model_flops(config, batch, args.seq) / (ms * 1e6)
            gemm_name = "gemm-bf16" if name.endswith("bf16") and "gemm-bf16" in ceiling else "gemm-fp32"
            base = _baseline(name, runners)
            ratio = f"{ms / statistics.median(runs[(batch, base)]):.2f}x {base}" if base else "-"
            cells.append(f"{' / '.join(f'{x:.1f}' for x in runs[(batch, name)])} | {ms:.1f} | {rate:.0f} | "
                         f"{rate / ceiling[gemm_name]:.0%} | {ratio}")
        print(f"| {name} | {' | '.join(cells)} |")


def _baseline(name: str, runners: dict) -> str | None:
    """What an artifact is measured against: OpenVINO at the same precision, else the first peer."""
    if not name.startswith("ours-"):
        return None
    same = f"openvino-{name.split('-')[1]}"
    return same if same in runners else next((n for n in runners if not n.startswith("ours-")), None)


def _inputs(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(1000, 30522, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[batch // 2:, seq * 3 // 4:] = 0  # some padding, as real batches have
    return ids, mask, torch.zeros_like(ids)


if __name__ == "__main__":
    main()

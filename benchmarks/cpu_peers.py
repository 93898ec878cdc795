"""Our CPU artifacts against their peers on the same weights, measured side by side in one run.

bert-base (random weights, seed 0), sequence 128, batch 1 and 8. Candidates: Hugging Face BertModel
eager fp32, ONNX Runtime fp32 (CPUExecutionProvider, ORT_ENABLE_ALL), our fp32 artifact, and our bf16
artifact where the CPU has native bf16 (AMX or AVX512-BF16; emulated bf16 is several times slower,
so it is left out elsewhere, and said so), each through the numerics gate. ONNX Runtime's CPU
execution provider has no bf16 or fp16 compute on x86, so fp32 is its like-for-like row. Prints each
median and its ratio to ONNX Runtime; targets: the auto-picked artifact <= 0.3x on a host with native
bf16, the fp32 artifact <= 1.0x everywhere.
Usage: python benchmarks/cpu_peers.py [--rounds 10] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

from neuron_encoder import Encoder, hardware, load_compiled, preset
from neuron_encoder.backends import CompileOptions
from neuron_encoder.bench.compare import compare, ratio_table
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import NeuronEncoderError
from neuron_encoder.weights import convert_hf_state_dict

BF16 = CompileOptions(auto_cast="matmult", auto_cast_type="bf16")


def onnx_runtime_session(hf: BertModel, inputs: tuple[torch.Tensor, ...], path: Path):
    """Export HF's model as optimum and most users do, then load it with every ORT optimisation."""
    import onnxruntime as ort
    with torch.no_grad():
        # A copy: the exporter leaves the module it traced about 1.4x slower in eager.
        torch.onnx.export(_ByKeyword(copy.deepcopy(hf)), inputs, str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                                        ("input_ids", "attention_mask", "token_type_ids")})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    # ORT's threads spin after each run by default, stealing the cores from whichever candidate runs
    # next in the interleaved loop; without spinning every candidate gets an idle machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(ids, mask, types):
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
        return session.run(None, feed)[0]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    work = Path(tempfile.mkdtemp(prefix="cpu-peers-"))

    torch.manual_seed(0)
    hf = BertModel(BertConfig(), add_pooling_layer=False).eval()
    ours = Encoder(preset("bert-base")).eval()
    ours.load_state_dict(convert_hf_state_dict(hf.state_dict(), ours))
    example = tuple(t for t in _inputs(1, args.seq))
    ort_run = onnx_runtime_session(hf, example, work / "bert.onnx")
    print("exported to ONNX; compiling our artifacts (each must pass the numerics gate)...", flush=True)

    print(f"CPU: {hardware.cpu_model()}; {hardware.auto_precision('cpu').reason}")
    artifacts = {"ours-fp32-artifact": compile_model(ours, batch_sizes=batches, seq_lens=[args.seq],
                                                     backend="cpu", options=CompileOptions(auto_cast="none"),
                                                     out=work / "fp32", progress=print).path}
    if hardware.cpu_has_fast_bf16():
        try:
            artifacts["ours-bf16-artifact"] = compile_model(ours, batch_sizes=batches, seq_lens=[args.seq],
                                                            backend="cpu", options=BF16, out=work / "bf16",
                                                            progress=print).path
        except NeuronEncoderError as error:  # failing the gate removes it from the race, loudly
            print(f"ours-bf16-artifact excluded: {error}")
    else:
        print("ours-bf16-artifact left out: this CPU has no native bf16 (the auto policy picks fp32 here)")
    auto = "ours-bf16-artifact" if "ours-bf16-artifact" in artifacts else "ours-fp32-artifact"
    loaded = {name: load_compiled(path) for name, path in artifacts.items()}

    rows = []
    for batch in batches:
        ids, mask, types = _inputs(batch, args.seq)
        candidates = {"onnxruntime-fp32": lambda: ort_run(ids, mask, types),
                      "hf-bertmodel-eager-fp32": lambda: hf(input_ids=ids, attention_mask=mask, token_type_ids=types)}
        candidates |= {name: (lambda m=m: m(ids, mask, types)) for name, m in loaded.items()}
        with torch.inference_mode():
            medians = compare(candidates, rounds=args.rounds, warmup=2)
        rows.append((f"b{batch} s{args.seq}", medians))
        print(f"  measured batch {batch}", flush=True)

    print(ratio_table(f"bert-base on CPU ({torch.get_num_threads()} threads), ratio to ONNX Runtime fp32",
                      rows, baseline="onnxruntime-fp32"))
    for setting, medians in rows:
        target = "target <= 0.3" if auto == "ours-bf16-artifact" else "no native bf16 here: fp32 is the auto pick"
        print(f"{setting}: auto-picked artifact {auto} = {medians[auto] / medians['onnxruntime-fp32']:.3f}x ORT "
              f"({target}); fp32 artifact = "
              f"{medians['ours-fp32-artifact'] / medians['onnxruntime-fp32']:.3f}x ORT (target <= 1.0)")


class _ByKeyword(torch.nn.Module):
    """HF's forward takes many optional arguments: pass ours by name, return the hidden states."""

    def __init__(self, hf: BertModel) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.hf(input_ids=input_ids, attention_mask=attention_mask,
                       token_type_ids=token_type_ids).last_hidden_state


def _inputs(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(1000, 30522, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[batch // 2:, seq * 3 // 4:] = 0  # some padding, as real batches have
    return ids, mask, torch.zeros_like(ids)


if __name__ == "__main__":
    main()

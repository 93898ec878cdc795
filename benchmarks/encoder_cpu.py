"""Our eager encoder against Hugging Face BertModel eager, same weights, measured side by side.

bert-base, sequence 128, batch 1 and 8, fp32, and bf16 autocast where the CPU has native bf16
(emulated bf16 is several times slower, so elsewhere it is left out, and said so); prints each ratio
ours/HF (target <= 1.0). Usage: python benchmarks/encoder_cpu.py [--rounds 10] [--seq 128]
"""

from __future__ import annotations

import argparse

import torch
from transformers import BertConfig, BertModel

from neuron_encoder import Encoder, hardware, preset
from neuron_encoder.bench.compare import compare, ratio_table
from neuron_encoder.weights import convert_hf_state_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()

    torch.manual_seed(0)
    hf = BertModel(BertConfig(), add_pooling_layer=False).eval()
    ours = Encoder(preset("bert-base")).eval()
    ours.load_state_dict(convert_hf_state_dict(hf.state_dict(), ours))

    precisions = ("fp32", "bf16-autocast") if hardware.cpu_has_fast_bf16() else ("fp32",)
    print(f"CPU: {hardware.cpu_model()}; precisions: {', '.join(precisions)}"
          + ("" if len(precisions) > 1 else " (bf16 left out: no native bf16 here)"), flush=True)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = torch.randint(1, 30522, (batch, args.seq))
        mask = torch.ones_like(ids)
        mask[batch // 2:, args.seq * 3 // 4:] = 0  # some padding, as real batches have
        types = torch.zeros_like(ids)
        for precision in precisions:
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "fp32")
            with torch.inference_mode(), autocast:
                medians = compare({
                    "hf-bertmodel-eager": lambda: hf(input_ids=ids, attention_mask=mask, token_type_ids=types),
                    "ours-eager": lambda: ours(ids, mask, types),
                }, rounds=args.rounds, warmup=2)
            rows.append((f"b{batch} s{args.seq} {precision}", medians))
            print(f"  measured batch {batch} {precision}", flush=True)
    print(ratio_table(f"bert-base eager on CPU ({torch.get_num_threads()} threads), ratio to HF",
                      rows, baseline="hf-bertmodel-eager"))


if __name__ == "__main__":
    main()

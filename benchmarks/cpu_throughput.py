"""Sentences per second on a corpus of real sentences, measured side by side in one run:
sentence-transformers' encode (batch 32, its own length sorting), our eager model, and our CPU
artifacts (fp32, and bf16 where the CPU has it natively) with length-aware batching into buckets
chosen for these texts. Ratios to sentence-transformers; target for the auto artifact: >= 2x.
Each is also run at --small-batch (8), sentence-transformers included: on CPUs whose caches a batch of
32 long texts overflows, the batch size alone moves the figure, and the table shows by how much.

Usage: python benchmarks/cpu_throughput.py [--texts FILE] [--count 512] [--batch 32] [--small-batch 8]
       [--max-buckets 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from neuron_encoder import hardware, load_compiled
from neuron_encoder.backends import CompileOptions
from neuron_encoder.bench.corpus import (bucket_padding, corpus_texts, length_sorted_batches, model_pass,
                                         padding_efficiency, race, sentence_transformers_pass)
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import InputFileError
from neuron_encoder.files import read_text_file
from neuron_encoder.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=Path, help="a text file, one text per line (default: the built-in corpus)")
    parser.add_argument("--count", type=int, default=512, help="texts from the built-in corpus")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--small-batch", type=int, default=8)
    parser.add_argument("--max-buckets", type=int, default=4)
    parser.add_argument("--model", default="minilm")
    args = parser.parse_args()
    resolved = load_model(args.model)
    texts = (read_text_file(args.texts, "texts file", InputFileError).splitlines() if args.texts
             else corpus_texts(args.count))
    texts = [t for t in texts if t.strip()]
    work = Path(tempfile.mkdtemp(prefix="cpu-throughput-"))
    (work / "texts.txt").write_text("\n".join(texts))
    precisions = ["fp32"] + (["bf16"] if hardware.cpu_has_fast_bf16() else [])
    auto = hardware.auto_precision("cpu")
    print(f"{len(texts)} texts, batch {args.batch}, {torch.get_num_threads()} threads, CPU: {hardware.cpu_model()}; "
          f"{auto.reason}")
    if "bf16" not in precisions:
        print("bf16 artifact skipped: this CPU has no native bf16 (emulated bf16 is several times slower)")

    sizes = sorted({args.batch, args.small_batch}, reverse=True)
    reference = f"sentence-transformers (batch {args.batch})"
    passes, efficiency, batch_of = {}, {}, {}
    for batch in sizes:
        theirs = sentence_transformers_pass(resolved.checkpoint_dir, texts, batch)
        if theirs is None:
            raise SystemExit("sentence-transformers is not installed: pip install sentence-transformers")
        passes[f"sentence-transformers (batch {batch})"] = theirs
    batches = length_sorted_batches(resolved.tokenizer, texts, args.batch)
    passes[f"ours eager fp32 (batch {args.batch})"] = model_pass(resolved.encoder, batches)
    efficiency[f"ours eager fp32 (batch {args.batch})"] = padding_efficiency(batches)
    loaded = []
    for precision in precisions:
        options = CompileOptions(auto_cast="none" if precision == "fp32" else "matmult", auto_cast_type="bf16")
        path = compile_model(resolved, batch_sizes=sizes[::-1], seq_lens="auto", lengths_from=work / "texts.txt",
                             max_buckets=args.max_buckets, backend="cpu", options=options,
                             artifacts_dir=work, progress=lambda message: None).path
        model = load_compiled(path)
        loaded.append(model)
        for batch in sizes:
            name = f"ours artifact {precision} (batch {batch}, seq buckets {','.join(map(str, model.shapes.seq_lens))})"
            artifact_batches = length_sorted_batches(model.tokenizer, texts, batch)
            passes[name] = model_pass(model, artifact_batches)
            efficiency[name] = padding_efficiency(artifact_batches, bucket_padding(model))
            batch_of[name] = batch
    speed = race(passes, len(texts))  # interleaved, best pass of each
    for model in loaded:
        model.close()

    base = speed[reference]
    print(f"{'candidate':<66} {'sentences/s':>12} {'ratio':>7} {'padding eff.':>13}")
    for name, value in speed.items():
        print(f"{name:<66} {value:>12.1f} {value / base:>7.2f} {efficiency.get(name, float('nan')):>13.0%}")
    best = max(batch_of, key=speed.get)
    same = f"sentence-transformers (batch {batch_of[best]})"
    print(f"the auto policy picks {auto.auto_cast_type if auto.auto_cast != 'none' else 'fp32'} here; fastest "
          f"artifact {best}: {speed[best] / base:.2f}x {reference} (target >= 2), "
          f"{speed[best] / speed[same]:.2f}x {same}")


if __name__ == "__main__":
    main()

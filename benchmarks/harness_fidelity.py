"""Does the benchmark report what a plain call costs? In one run, for the eager model and the CPU
artifact (all-MiniLM-L6-v2, batch 1, seq 128, the built-in corpus): the p50 that the benchmark's
closed loop reports at concurrency 1, against a plain timing of the same calls in the main thread,
interleaved round by round. Target: 0.95-1.05.

For information it also times the calls from a worker thread with the model loaded in the main
thread, which is what the harness did before the thread rule (neuron_encoder/threads.py): on hosts
where a second OpenMP team slows calls down (issue 8 measured 1.5x on a 2-core Sapphire Rapids),
that column shows it.

Usage: python benchmarks/harness_fidelity.py [--rounds 5] [--calls 30] [--model minilm]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import torch

from neuron_encoder import hardware
from neuron_encoder.backends import CompileOptions
from neuron_encoder.bench.engines import artifact_engine, eager_engine
from neuron_encoder.bench.loop import measure
from neuron_encoder.bench.stats import latency_summary
from neuron_encoder.bench.workload import make_workload
from neuron_encoder.compiler import compile_model
from neuron_encoder.models import load_model


def plain_p50(run, batches, calls: int) -> float:
    """The same calls, timed one by one on this (the main) thread."""
    times = []
    with torch.inference_mode():
        for i in range(calls):
            start = time.perf_counter_ns()
            run(*batches[i % len(batches)])
            times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6


def worker_p50(run, batches, calls: int) -> float:
    """The same calls from a worker thread (the model stays where the main thread loaded it)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(plain_p50(run, batches, calls)))
    thread.start()
    thread.join()
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--model", default="minilm")
    args = parser.parse_args()
    resolved = load_model(args.model)
    workload = make_workload(resolved.encoder.config, resolved.tokenizer, 1, 128)
    batches = [b.as_tuple() for b in workload.batches]
    path = compile_model(resolved, batch_sizes=[1], seq_lens=[128], backend="cpu",
                         options=CompileOptions(auto_cast="none"), artifacts_dir=tempfile.mkdtemp(),
                         progress=lambda message: None).path
    engines = [eager_engine(resolved.encoder), artifact_engine(path, replicas=1)]
    print(f"{args.model}, batch 1, seq 128, {torch.get_num_threads()} threads, CPU: {hardware.cpu_model()}")
    print(f"{'engine':<24} {'plain p50 ms':>12} {'bench p50 ms':>12} {'ratio':>7} {'worker p50 ms':>14}")
    for engine in engines:
        plain, bench, worker = [], [], []
        for _ in range(args.rounds):  # interleaved, so drift on a shared host hits all three alike
            plain.append(plain_p50(engine.run, batches, args.calls))
            m = measure(engine.run, workload, concurrency=1, calls=args.calls, warmup=3,
                        threads=engine.thread_plan(1))
            bench.append(latency_summary(m.latencies_ns)["p50"])
            worker.append(worker_p50(engine.run, batches, args.calls))
        p, b, w = (statistics.median(v) for v in (plain, bench, worker))
        print(f"{engine.name:<24} {p:>12.2f} {b:>12.2f} {b / p:>7.3f} {w:>14.2f}  (target ratio 0.95-1.05)")
        engine.close()


if __name__ == "__main__":
    main()

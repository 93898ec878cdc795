"""The benchmark harness's own cost per call, against the p50 of a 1 ms workload, in one run (target < 1%).

A callable that busy-waits 1 ms stands in for a model and is timed by the closed loop at concurrency 1.
The harness overhead is measured as bench rows report it: the same loop driving a no-op
(runner.harness_overhead_ms: wall time per iteration, timer reads and bookkeeping included).
A second, independent figure: each call also times itself, and the harness latency minus the
callable's own time is what the timer adds around a call. The open loop's scheduler lateness
(counted in open-loop latencies) is printed for information.

Usage: python benchmarks/harness_overhead.py [--seconds 3] [--work-ms 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from neuron_encoder.bench.loop import harness_overhead_ms, measure
from neuron_encoder.bench.workload import Workload
from neuron_encoder.text import Batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to time the 1 ms workload")
    parser.add_argument("--work-ms", type=float, default=1.0, help="busy-wait per call, ms")
    args = parser.parse_args()

    ids = torch.ones(1, 16, dtype=torch.long)
    workload = Workload(1, 16, (Batch(ids, torch.ones_like(ids), torch.zeros_like(ids)),), source="constant")
    work_ns = int(args.work_ms * 1e6)
    own_ns: list[int] = []

    def busy_wait(*inputs: torch.Tensor) -> None:
        start = time.perf_counter_ns()
        while time.perf_counter_ns() - start < work_ns:
            pass
        own_ns.append(time.perf_counter_ns() - start)

    m = measure(busy_wait, workload, concurrency=1, duration_s=args.seconds, warmup=20)
    own_ns = own_ns[20:]  # drop the warm-up calls; with one worker the rest pair up with the latencies
    p50_ms = statistics.median(m.latencies_ns) / 1e6
    overhead_ms = harness_overhead_ms(workload, "closed")
    timer_ms = statistics.median(t - o for t, o in zip(m.latencies_ns, own_ns)) / 1e6
    open_ms = harness_overhead_ms(workload, "open")

    print(f"{args.work_ms:g} ms busy-wait workload, closed loop, 1 worker, {m.calls} calls in {m.duration_s:.1f} s")
    print(f"  p50 latency per call                         {p50_ms:9.4f} ms")
    print(f"  harness overhead per call (no-op loop)       {overhead_ms * 1000:9.2f} us  "
          f"= {overhead_ms / p50_ms * 100:.3f}% of p50 (target < 1%)")
    print(f"  timer overhead inside each latency (median)  {timer_ms * 1000:9.2f} us  "
          f"= {timer_ms / p50_ms * 100:.3f}% of p50")
    print(f"  open loop, scheduler lateness per request    {open_ms * 1000:9.2f} us  "
          "(counted in open-loop latencies; not part of the target)")


if __name__ == "__main__":
    main()

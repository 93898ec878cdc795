"""Synthetic engines for the benchmark tests: callables whose behaviour (failures, latency under
load) is known, so the loop's counting and the capacity search can be checked exactly."""

from __future__ import annotations

import itertools
import math
import threading
import time

import torch

from neuron_encoder.bench.engines import Engine
from neuron_encoder.bench.loop import Measurement

HIDDEN = 8


def hidden_of(input_ids, *rest):
    return torch.ones(*input_ids.shape, HIDDEN)


class Counting:
    """Counts calls (thread-safe); fails every `fail_every`-th call when asked."""

    def __init__(self, fail_every: int | None = None):
        self.calls = itertools.count(1)
        self.fail_every = fail_every

    def __call__(self, input_ids, *rest):
        n = next(self.calls)
        if self.fail_every and n % self.fail_every == 0:
            raise RuntimeError(f"synthetic failure {n}")
        return hidden_of(input_ids)


class SlotServer:
    """A synthetic backend whose latency grows with load: `slots` calls run at once, each sleeping
    service_s; further calls queue on a semaphore. Capacity: slots / service_s calls per second."""

    def __init__(self, slots: int, service_s: float):
        self.slots, self.service_s = slots, service_s
        self.semaphore = threading.Semaphore(slots)

    def __call__(self, input_ids, *rest):
        with self.semaphore:
            time.sleep(self.service_s)
        return hidden_of(input_ids)


class QueueModel:
    """`slots` calls served at once, each in service_s, as arithmetic instead of sleeps: a `measure` for
    find_capacity whose latencies and throughput follow from the load alone, so no test depends on a clock.
    Closed loop: c workers get min(c, slots) / service_s calls/s, each waiting ceil(c / slots) services.
    Open loop at rate r over duration_s: below capacity a call takes one service; above it the queue grows
    and the last calls wait (r / capacity - 1) x duration_s more."""

    def __init__(self, slots: int, service_s: float):
        self.slots, self.service_s = slots, service_s

    def __call__(self, input_ids, *rest):
        return hidden_of(input_ids)

    def measure(self, run, workload, *, mode="closed", concurrency=1, rate=None, duration_s=None, calls=None,
                **ignored) -> Measurement:
        capacity = min(concurrency, self.slots) / self.service_s  # calls per second
        if mode == "closed":
            latency_s, served = self.service_s * math.ceil(concurrency / self.slots), capacity
        else:
            latency_s = self.service_s + max(0.0, rate / capacity - 1) * (duration_s or 1.0)
            served = min(rate, capacity)
        count = calls or max(1, round(served * (duration_s or 1.0)))
        completions = [round((i + 1) / served * 1e9) for i in range(count)]
        return Measurement(mode=mode, concurrency=concurrency, rate=rate, latencies_ns=[round(latency_s * 1e9)] * count,
                           completions_ns=completions, batch_indices=[0] * count, errors=0, first_error=None,
                           start_ns=0, end_ns=completions[-1], cpu_percent=0.0, rss_mb=0.0)


def engine(run, name="synthetic", device="neuron") -> Engine:
    """An engine around `run`; off the CPU by default, so the thread rule leaves torch's threads alone."""
    return Engine(name=name, precision="fp32", device=device, cores=1, run=run)

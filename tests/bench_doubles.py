"""Synthetic engines for the benchmark tests: callables whose behaviour (failures, latency under
load) is known, so the loop's counting and the capacity search can be checked exactly."""

from __future__ import annotations

import itertools
import threading
import time

import torch

from neuron_encoder.bench.engines import Engine

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


def engine(run, name="synthetic", device="neuron") -> Engine:
    """An engine around `run`; off the CPU by default, so the thread rule leaves torch's threads alone."""
    return Engine(name=name, precision="fp32", device=device, cores=1, run=run)

"""The timed loop: closed-loop workers or an open-loop arrival schedule driving one callable, timed
with perf_counter_ns. No model code: what runs is whatever callable it is given.

Timing rules, so numbers from different backends compare:
- the callable returns only when its output is on the host (CUDA synchronised, Neuron outputs
  are CPU tensors), so the timer sees the whole computation;
- warm-up calls run on every worker before the clock starts and are not counted;
- in open loop a request's latency starts at its *scheduled* send time, so time spent queueing
  behind busy workers counts, as it would for a client;
- workers follow the thread rule (neuron_encoder/threads.py): one worker is the calling thread,
  where the model was loaded; several split the CPU threads;
- the harness's own cost per call is measured with a no-op and reported beside the numbers.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

from neuron_encoder.bench import checks
from neuron_encoder.bench.workload import Workload
from neuron_encoder.errors import ConfigError
from neuron_encoder.threads import ThreadPlan, run_workers

Run = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]
_NS = 1_000_000_000


@dataclass
class Measurement:
    """Raw timings of one measured run, before statistics: one entry per successful call."""

    mode: str
    concurrency: int  # closed-loop workers, or open-loop workers (the most calls in flight)
    rate: float | None
    latencies_ns: list[int]
    completions_ns: list[int]
    batch_indices: list[int]  # which batch of the workload each call ran
    errors: int
    first_error: str | None
    start_ns: int
    end_ns: int
    cpu_percent: float  # this process, over the measured phase; 100 = one core busy
    rss_mb: float  # resident memory at the end of the run
    worker_threads: tuple[int, ...] = ()  # threading.get_ident() of each worker, in order

    @property
    def calls(self) -> int:
        return len(self.latencies_ns)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / _NS


@dataclass
class _Worker:
    """What one thread records; merged after the run so the hot loop never takes a lock."""

    latencies: list[int] = field(default_factory=list)
    completions: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    thread: int = 0

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"

    def done(self, index: int, started_ns: int, finished_ns: int) -> None:
        self.latencies.append(finished_ns - started_ns)
        self.completions.append(finished_ns)
        self.indices.append(index)


def arrival_offsets(rate: float, *, duration_s: float | None = None, calls: int | None = None,
                    arrival: str = "poisson", seed: int = 0) -> list[int]:
    """Open-loop send times in ns from the start: a seeded Poisson process or a fixed interval.

    The first request goes at 0; the schedule ends at duration_s or after `calls` requests,
    whichever comes first.
    """
    checks.positive_number("an open-loop rate (requests/s)", rate)
    checks.choice("arrival process", arrival, checks.ARRIVALS)
    checks.bounds(duration_s, calls)
    rng = random.Random(seed)
    offsets: list[int] = []
    t = 0.0
    while (calls is None or len(offsets) < calls) and (duration_s is None or t < duration_s):
        offsets.append(int(t * _NS))
        t += rng.expovariate(rate) if arrival == "poisson" else 1.0 / rate
    return offsets


def _warm_up(run: Run, inputs: Sequence[tuple], calls: int, offset: int, record: _Worker) -> None:
    for i in range(calls):
        try:
            run(*inputs[(offset + i) % len(inputs)])
        except Exception as exc:  # reported if the measured calls fail too
            if record.first_error is None:
                record.first_error = f"during warm-up: {type(exc).__name__}: {exc}"


def _closed_loop(run: Run, inputs: Sequence[tuple], record: _Worker, tickets, deadline: int | None,
                 limit: int | None) -> None:
    """Call back to back until the deadline or the shared call limit; latency is the call itself."""
    clock, count = time.perf_counter_ns, len(inputs)
    while True:
        k = next(tickets)
        if limit is not None and k >= limit:
            return
        index = k % count
        x = inputs[index]
        t0 = clock()
        if deadline is not None and t0 >= deadline:
            return
        try:
            run(*x)
        except Exception as exc:
            record.failed(exc)
            continue
        record.done(index, t0, clock())


def _open_loop(run: Run, inputs: Sequence[tuple], record: _Worker, tickets, start: int, offsets: list[int],
               max_queue_ns: int) -> None:
    """Take the next scheduled request, wait for its send time, run it; latency from the send time.
    A request still waiting to start max_queue_ns after its send time is dropped as an error."""
    clock, sleep, count = time.perf_counter_ns, time.sleep, len(inputs)
    while True:
        k = next(tickets)
        if k >= len(offsets):
            return
        due = start + offsets[k]
        now = clock()
        if now < due:
            # Wakes typically 50-150 us late (timer slack, a busy host); counted in the latency and
            # in the open-loop harness overhead. Spinning instead would hold the GIL or the core.
            sleep((due - now) / _NS)
        elif now - due > max_queue_ns:
            record.failed(TimeoutError(f"request waited over {max_queue_ns / _NS:.3g} s to start; dropped"))
            continue
        index = k % count
        try:
            run(*inputs[index])
        except Exception as exc:
            record.failed(exc)
            continue
        record.done(index, due, clock())


def _schedule(mode: str, rate: float | None, duration_s: float | None, calls: int | None, arrival: str,
              seed: int, max_queue_s: float | None) -> tuple[list[int], int]:
    """An open loop's send times and how long a request may wait to start; nothing for a closed loop."""
    if mode == "closed":
        if rate is not None:
            raise ConfigError("rate is for open-loop runs; a closed loop is set by its concurrency")
        return [], 0
    if rate is None:
        raise ConfigError("an open-loop run needs a rate (requests/s)")
    offsets = arrival_offsets(rate, duration_s=duration_s, calls=calls, arrival=arrival, seed=seed)
    return offsets, int((max_queue_s if max_queue_s is not None else max(1.0, offsets[-1] / _NS)) * _NS)


def measure(run: Run, workload: Workload, *, mode: str = "closed", concurrency: int = 1,
            rate: float | None = None, duration_s: float | None = None, calls: int | None = None,
            warmup: int = 3, arrival: str = "poisson", seed: int = 0, max_queue_s: float | None = None,
            threads: ThreadPlan | None = None) -> Measurement:
    """Drive `run` with the workload's batches and time every call.

    closed: `concurrency` workers call back to back; latency is the call itself.
    open: requests are sent at `rate` per second (arrival_offsets) to `concurrency` workers;
    latency runs from the scheduled send time to completion. A request still waiting to start
    `max_queue_s` after its send time (default: the schedule's span, at least 1 s) is dropped and
    counted as an error, so an overloaded engine ends in bounded time.
    Workers run under the thread rule (threads.run_workers; `threads` is the CPU split, None for
    engines that do not compute on the CPU). Each first makes `warmup` calls; the clock starts
    when all have. Failed calls are counted in `errors`, never in the latencies.
    """
    checks.choice("mode", mode, checks.MODES)
    checks.positive_int("concurrency", concurrency)
    checks.warmup_calls(warmup)
    checks.bounds(duration_s, calls)
    offsets, max_queue_ns = _schedule(mode, rate, duration_s, calls, arrival, seed, max_queue_s)
    inputs = [batch.as_tuple() for batch in workload.batches]
    workers = [_Worker() for _ in range(concurrency)]
    tickets = itertools.count()  # next() on a count is atomic under the GIL: one ticket per call
    process = psutil.Process()
    shared: dict[str, Any] = {}

    def begin() -> None:  # run by one thread once every worker is warm, before any is released
        process.cpu_percent(None)
        shared["start"] = time.perf_counter_ns()
        shared["deadline"] = shared["start"] + int(duration_s * _NS) if duration_s is not None else None

    barrier = threading.Barrier(concurrency, action=begin)

    def body(number: int) -> None:
        record = workers[number]
        record.thread = threading.get_ident()
        try:
            _warm_up(run, inputs, warmup, number, record)
            barrier.wait()
        except BaseException:
            barrier.abort()  # the other workers stop waiting; the first error is raised in the caller
            raise
        if mode == "closed":
            _closed_loop(run, inputs, record, tickets, shared["deadline"], calls)
        else:
            _open_loop(run, inputs, record, tickets, shared["start"], offsets, max_queue_ns)

    run_workers(concurrency, body, threads)
    end_ns = time.perf_counter_ns()
    return Measurement(
        mode=mode, concurrency=concurrency, rate=float(rate) if rate is not None else None,
        latencies_ns=[v for w in workers for v in w.latencies],
        completions_ns=[v for w in workers for v in w.completions],
        batch_indices=[v for w in workers for v in w.indices],
        errors=sum(w.errors for w in workers),
        first_error=next((w.first_error for w in workers if w.first_error), None),
        start_ns=int(shared["start"]), end_ns=end_ns, cpu_percent=process.cpu_percent(None),
        rss_mb=process.memory_info().rss / 2**20, worker_threads=tuple(w.thread for w in workers),
    )


def _noop(*inputs: torch.Tensor) -> None:
    return None


OVERHEAD_CALLS = 2000
OVERHEAD_OPEN_RATE = 2000.0  # requests/s for the open-loop no-op run: 0.25 s for 500 calls


def harness_overhead_ms(workload: Workload, mode: str = "closed", calls: int = OVERHEAD_CALLS) -> float:
    """The harness's own cost per call in ms, measured by driving a no-op through the same loop.

    closed: wall time per iteration of one worker (timer reads, bookkeeping, the call itself), i.e.
    everything the loop adds around a real call. open: mean scheduled-send-to-completion time of a
    no-op, i.e. how late the scheduler wakes plus the same bookkeeping.
    """
    if mode == "closed":
        m = measure(_noop, workload, concurrency=1, calls=calls, warmup=10)
        return (m.end_ns - m.start_ns) / m.calls / 1e6
    m = measure(_noop, workload, mode="open", rate=OVERHEAD_OPEN_RATE, concurrency=1,
                calls=min(calls, 500), warmup=10, arrival="fixed")
    return math.fsum(m.latencies_ns) / m.calls / 1e6

"""The server's Prometheus metrics (prometheus-client), in a registry of its own per server.

Histograms: request, tokenization, queue and inference durations; batch size and tokens; input length.
Counters: requests by route and status, rejections by reason, bucket hits, busy seconds, tokens.
Gauges: queue depth, inputs in flight, per-replica busy fraction (last BUSY_WINDOW_S), padding efficiency.

With several server processes (workers.py), prometheus_client's multiprocess mode: the supervisor gives
every worker PROMETHEUS_MULTIPROC_DIR (a private temporary directory) before it imports prometheus_client,
each worker's counters and histograms live in files there, and /metrics, from whichever worker answers,
adds them up (MultiProcessCollector). Gauges cannot be callbacks there: each worker sets them every
REFRESH_S (refresh()), replicas are labelled "worker.replica", and padding efficiency is computed from
the summed token counters.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

PREFIX = "neuron_encoder"
BUSY_WINDOW_S = 10.0
REFRESH_S = 1.0  # how often a worker sets its gauges in multiprocess mode
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def _pid_once() -> None:
    """Multiprocess mode asks the OS for the process id on every inc and observe (a system call, 4% of a
    worker's time under load in py-spy): a worker process never forks, so its id is read once. Process-wide,
    and only ever in a worker, which is a process of its own."""
    from prometheus_client import values
    pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: pid)


class ReplicaActivity:
    """When each replica was computing, to report the share of the last BUSY_WINDOW_S it was busy."""

    def __init__(self, replicas: int, window_s: float = BUSY_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window_s, clock
        self._spans: list[deque[tuple[float, float]]] = [deque() for _ in range(replicas)]
        self._since: list[float | None] = [None] * replicas  # start of the batch running now
        self._started = clock()
        self._lock = threading.Lock()

    def begin(self, replica: int) -> None:
        with self._lock:
            self._since[replica] = self.clock()

    def end(self, replica: int) -> float:
        """Close the running span; its length in seconds."""
        with self._lock:
            start, now = self._since[replica], self.clock()
            self._since[replica] = None
            if start is None:
                return 0.0
            spans = self._spans[replica]
            spans.append((start, now))
            while spans and spans[0][1] < now - self.window:
                spans.popleft()
            return now - start

    def busy_fraction(self, replica: int) -> float:
        with self._lock:
            now = self.clock()
            low = max(now - self.window, self._started)
            spans = list(self._spans[replica])
            if self._since[replica] is not None:
                spans.append((self._since[replica], now))
        busy = sum(max(0.0, end - max(start, low)) for start, end in spans)
        return min(1.0, busy / max(now - low, 1e-9))


class _BusyCollector:
    def __init__(self, activity: ReplicaActivity) -> None:
        self.activity = activity

    def collect(self):
        family = GaugeMetricFamily(f"{PREFIX}_replica_busy_fraction",
                                   f"share of the last {BUSY_WINDOW_S:g} s each replica spent computing",
                                   labels=["replica"])
        for replica in range(len(self.activity._spans)):
            family.add_metric([str(replica)], self.activity.busy_fraction(replica))
        yield family


class Metrics:
    """The instruments, named PREFIX_*; render() is the /metrics body."""

    def __init__(self, replicas: int, queue_depth: Callable[[], float], in_flight: Callable[[], float],
                 worker: int | None = None) -> None:
        """`worker`: this process's index among several (multiprocess mode, PROMETHEUS_MULTIPROC_DIR set)."""
        self.registry = registry = CollectorRegistry()
        self.activity = ReplicaActivity(replicas)
        self.shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if worker is not None else None
        self.worker = worker
        if self.shared_dir is not None:
            _pid_once()

        def histogram(name: str, text: str, buckets, labels=()) -> Histogram:
            return Histogram(f"{PREFIX}_{name}", text, labels, buckets=buckets, registry=registry)

        def counter(name: str, text: str, labels=()) -> Counter:
            return Counter(f"{PREFIX}_{name}", text, labels, registry=registry)

        self.request_duration = histogram("request_duration_seconds", "time from request to response", _SECONDS,
                                          ["route"])
        self.tokenization_duration = histogram("tokenization_duration_seconds", "tokenizing one request", _SECONDS)
        self.queue_duration = histogram("queue_duration_seconds", "a request's wait for a replica", _SECONDS)
        self.inference_duration = histogram("inference_duration_seconds", "one batch on a replica", _SECONDS)
        self.batch_size = histogram("batch_size", "inputs in one batch", _COUNTS)
        self.batch_tokens = histogram("batch_tokens", "real (unpadded) tokens in one batch", _TOKENS)
        self.input_length = histogram("request_input_length", "tokens of one input", _TOKENS)
        self.requests = counter("requests", "requests answered, by route and status", ["route", "status"])
        self.rejected = counter("rejected", "requests refused, by reason", ["reason"])
        self.bucket_hits = counter("bucket_hits", "batches run on each compiled bucket", ["batch", "seq"])
        self.busy_seconds = counter("replica_busy_seconds", "seconds each replica spent computing", ["replica"])
        self.real_tokens = counter("real_tokens", "tokens computed that were inputs")
        self.padded_tokens = counter("padded_tokens", "tokens computed, padding included")
        self.batch_failures = counter("batch_failures", "batches the backend failed on")
        self._real = self._padded = 0  # batch_done runs on the event loop only
        depth = Gauge(f"{PREFIX}_queue_depth", "inputs waiting for a replica", registry=registry,
                      multiprocess_mode="livesum")
        flight = Gauge(f"{PREFIX}_in_flight_inputs", "inputs admitted and not yet answered", registry=registry,
                       multiprocess_mode="livesum")
        if self.shared_dir is None:
            depth.set_function(queue_depth)
            flight.set_function(in_flight)
            Gauge(f"{PREFIX}_padding_efficiency", "real / padded tokens over every batch so far",
                  registry=registry).set_function(self._efficiency)
            registry.register(_BusyCollector(self.activity))
        else:  # set by refresh(); the efficiency is computed when rendering
            busy = Gauge(f"{PREFIX}_replica_busy_fraction", f"share of the last {BUSY_WINDOW_S:g} s each replica "
                         "spent computing", ["replica"], registry=registry, multiprocess_mode="livesum")
            self._gauges = [(depth, queue_depth), (flight, in_flight)]
            self._gauges += [(busy.labels(f"{worker}.{r}"), lambda r=r: self.activity.busy_fraction(r))
                             for r in range(replicas)]

    def refresh(self) -> None:
        """Multiprocess mode: write this worker's gauges (the worker calls it every REFRESH_S)."""
        for gauge, value in getattr(self, "_gauges", ()):
            gauge.set(value())

    def _efficiency(self) -> float:
        return self._real / self._padded if self._padded else 1.0

    def batch_done(self, replica: int, rows: int, tokens: int, bucket: tuple[int, int], computed: int,
                   seconds: float, failed: bool) -> None:
        """One batch: `tokens` real, `computed` with padding (the bucket's, or on the CPU rows x longest)."""
        batch, seq = bucket
        self.inference_duration.observe(seconds)
        self.busy_seconds.labels(str(replica)).inc(seconds)
        if failed:
            self.batch_failures.inc()
            return
        self.batch_size.observe(rows)
        self.batch_tokens.observe(tokens)
        self.bucket_hits.labels(str(batch), str(seq)).inc()
        self.real_tokens.inc(tokens)
        self.padded_tokens.inc(computed)
        self._real += tokens
        self._padded += computed

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(_WithoutCreated(self.registry))
        from prometheus_client.multiprocess import MultiProcessCollector
        self.refresh()
        every = CollectorRegistry()
        MultiProcessCollector(every, self.shared_dir)
        return generate_latest(_WithEfficiency(every))


class _WithoutCreated:
    """A registry's view without the *_created series, which double every counter's lines for a timestamp
    nobody reads; left out here rather than by prometheus_client's process-wide switch, which would
    change every other registry in the process too."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        for family in self.registry.collect():
            family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            yield family


class _WithEfficiency:
    """Every worker's series, summed, and the padding efficiency of their summed token counters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        totals = {}
        for family in self.registry.collect():
            if family.name in (f"{PREFIX}_real_tokens", f"{PREFIX}_padded_tokens"):
                totals[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
            yield family
        padded = totals.get(f"{PREFIX}_padded_tokens", 0)
        efficiency = GaugeMetricFamily(f"{PREFIX}_padding_efficiency", "real / padded tokens over every batch so far")
        efficiency.add_metric([], totals.get(f"{PREFIX}_real_tokens", 0) / padded if padded else 1.0)
        yield efficiency

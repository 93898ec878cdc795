"""The server's Prometheus metrics (prometheus-client), in a registry of its own per server.

Histograms: request, tokenization, queue and inference durations; batch size and tokens; input length.
Counters: requests by route and status, rejections by reason, bucket hits, busy seconds, tokens.
Gauges: queue depth, inputs in flight, per-replica busy fraction (last BUSY_WINDOW_S), padding efficiency.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

PREFIX = "neuron_encoder"
BUSY_WINDOW_S = 10.0
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


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

    def __init__(self, replicas: int, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        self.registry = registry = CollectorRegistry()
        self.activity = ReplicaActivity(replicas)

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
        Gauge(f"{PREFIX}_queue_depth", "inputs waiting for a replica", registry=registry).set_function(queue_depth)
        Gauge(f"{PREFIX}_in_flight_inputs", "inputs admitted and not yet answered",
              registry=registry).set_function(in_flight)
        Gauge(f"{PREFIX}_padding_efficiency", "real / padded tokens over every batch so far",
              registry=registry).set_function(self._efficiency)
        registry.register(_BusyCollector(self.activity))
        self._real = self._padded = 0  # batch_done runs on the event loop only

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
        return generate_latest(_WithoutCreated(self.registry))


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

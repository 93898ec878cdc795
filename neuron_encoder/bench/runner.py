"""The benchmark loop: closed-loop workers or an open-loop arrival schedule driving one target, timed
with perf_counter_ns and turned into BenchRows; sweeps over configurations; the SLO capacity search.

Timing rules, so numbers from different backends compare:
- a target's `run` returns only when its output is on the host (CUDA synchronised, Neuron outputs
  are CPU tensors), so the timer sees the whole computation;
- warm-up calls run on every worker before the clock starts and are not counted;
- in open loop a request's latency starts at its *scheduled* send time, so time spent queueing
  behind busy workers counts, as it would for a client;
- the harness's own cost per call is measured with a no-op target and reported beside the numbers.
"""

from __future__ import annotations

import gc
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

from neuron_encoder.bench.results import BenchRow
from neuron_encoder.bench.stats import latency_summary, window_throughput
from neuron_encoder.bench.workload import Workload
from neuron_encoder.compiler import parse_sizes
from neuron_encoder.errors import ConfigError, NeuronEncoderError, ShapeError
from neuron_encoder.model import pool
from neuron_encoder.text import Batch

Run = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]
Progress = Callable[[str], None]

MODES = ("closed", "open")
ARRIVALS = ("poisson", "fixed")
_NS = 1_000_000_000
FEW_CALLS = 100  # below this a p99 is little more than the slowest call


class BenchmarkFailed(NeuronEncoderError):
    """Every measured call of a configuration failed: there is nothing to report for it."""


@dataclass(frozen=True)
class Target:
    """One thing to benchmark: a callable plus what a reader needs to know about it.

    run(input_ids, attention_mask, token_type_ids) must return a host tensor (B, T, H) and return
    only when the work is done (see the module docstring); it may be called from several threads.
    """

    name: str  # the row's backend, e.g. "cpu-eager", "cpu-torchscript-fp32", "cuda-fp16", "neuron-1core"
    precision: str
    cores: int  # NeuronCores, GPUs, or CPU threads the target uses
    run: Run
    artifact_sha256: str | None = None  # sha256 of the artifact's manifest.json; None for eager models
    label: str = ""  # free text, e.g. "2 NeuronCores (a copy per core)"


@dataclass(frozen=True)
class LazyTarget:
    """A target built (compiled, loaded) only when its turn in a sweep comes and dropped after it,
    so one model at a time holds host memory or NeuronCores."""

    name: str
    build: Callable[[], Target]


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
    crash: BaseException | None = None

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"


def _check_bounds(duration_s: float | None, calls: int | None) -> None:
    if duration_s is None and calls is None:
        raise ConfigError("a benchmark needs a bound: a duration in seconds, a number of calls, or both")
    if duration_s is not None and (isinstance(duration_s, bool) or not duration_s > 0 or not math.isfinite(duration_s)):
        raise ConfigError(f"duration must be a positive number of seconds, got {duration_s!r}")
    if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
        raise ConfigError(f"calls must be a positive integer, got {calls!r}")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def arrival_offsets(rate: float, *, duration_s: float | None = None, calls: int | None = None,
                    arrival: str = "poisson", seed: int = 0) -> list[int]:
    """Open-loop send times in ns from the start: a seeded Poisson process or a fixed interval.

    The first request goes at 0; the schedule ends at duration_s or after `calls` requests,
    whichever comes first.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0 or not math.isfinite(rate):
        raise ConfigError(f"an open-loop rate must be a positive number of requests/s, got {rate!r}")
    if arrival not in ARRIVALS:
        raise ConfigError(f"unknown arrival process {arrival!r}; choose one of {', '.join(ARRIVALS)}")
    _check_bounds(duration_s, calls)
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


def measure(run: Run, workload: Workload, *, mode: str = "closed", concurrency: int = 1,
            rate: float | None = None, duration_s: float | None = None, calls: int | None = None,
            warmup: int = 3, arrival: str = "poisson", seed: int = 0,
            max_queue_s: float | None = None) -> Measurement:
    """Drive `run` with the workload's batches and time every call.

    closed: `concurrency` threads call back to back; latency is the call itself.
    open: requests are sent at `rate` per second (arrival_offsets) to `concurrency` worker threads;
    latency runs from the scheduled send time to completion. A request still waiting to start
    `max_queue_s` after its send time (default: the schedule's span, at least 1 s) is dropped and
    counted as an error, so an overloaded target ends in bounded time.
    Each worker first makes `warmup` calls; the clock starts when all have finished them.
    Failed calls are counted in `errors`, never in the latencies.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    _check_positive_int("concurrency", concurrency)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warm-up must be a number of calls >= 0, got {warmup!r}")
    _check_bounds(duration_s, calls)
    if mode == "open":
        if rate is None:
            raise ConfigError("an open-loop run needs a rate (requests/s)")
        offsets = arrival_offsets(rate, duration_s=duration_s, calls=calls, arrival=arrival, seed=seed)
        span_s = offsets[-1] / _NS
        max_queue_ns = int((max_queue_s if max_queue_s is not None else max(1.0, span_s)) * _NS)
    elif rate is not None:
        raise ConfigError("rate is for open-loop runs; a closed loop is set by its concurrency")

    inputs = [batch.as_tuple() for batch in workload.batches]
    count = len(inputs)
    workers = [_Worker() for _ in range(concurrency)]
    tickets = itertools.count()  # next() on a count is atomic under the GIL: one ticket per call
    process = psutil.Process()
    shared: dict[str, int | None] = {}

    def begin() -> None:  # run by one thread once every worker is warm, before any is released
        process.cpu_percent(None)
        shared["start"] = time.perf_counter_ns()
        shared["deadline"] = shared["start"] + int(duration_s * _NS) if duration_s is not None else None

    barrier = threading.Barrier(concurrency, action=begin)

    def closed_worker(record: _Worker) -> None:
        clock = time.perf_counter_ns
        latencies, completions, indices = record.latencies, record.completions, record.indices
        deadline, limit = shared["deadline"], calls
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
            t1 = clock()
            latencies.append(t1 - t0)
            completions.append(t1)
            indices.append(index)

    def open_worker(record: _Worker) -> None:
        clock, sleep = time.perf_counter_ns, time.sleep
        latencies, completions, indices = record.latencies, record.completions, record.indices
        start, total = shared["start"], len(offsets)
        while True:
            k = next(tickets)
            if k >= total:
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
            t1 = clock()
            latencies.append(t1 - due)
            completions.append(t1)
            indices.append(index)

    loop = closed_worker if mode == "closed" else open_worker

    def body(number: int, record: _Worker) -> None:
        try:
            _warm_up(run, inputs, warmup, number, record)
            barrier.wait()
            loop(record)
        except BaseException as exc:  # a harness bug: surface it in the caller's thread
            record.crash = exc
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i, w), name=f"bench-worker-{i}", daemon=True)
               for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    end_ns = time.perf_counter_ns()
    crashes = [w.crash for w in workers if w.crash is not None]
    if crashes:  # the real one first: the others only saw the barrier it broke
        raise next((c for c in crashes if not isinstance(c, threading.BrokenBarrierError)), crashes[0])
    cpu_percent = process.cpu_percent(None)
    rss_mb = process.memory_info().rss / 2**20

    def merged(attribute: str) -> list[int]:
        return [value for w in workers for value in getattr(w, attribute)]

    return Measurement(
        mode=mode, concurrency=concurrency, rate=float(rate) if rate is not None else None,
        latencies_ns=merged("latencies"), completions_ns=merged("completions"), batch_indices=merged("indices"),
        errors=sum(w.errors for w in workers),
        first_error=next((w.first_error for w in workers if w.first_error), None),
        start_ns=int(shared["start"]), end_ns=end_ns, cpu_percent=cpu_percent, rss_mb=rss_mb,
    )


def _noop(*inputs: torch.Tensor) -> None:
    return None


OVERHEAD_CALLS = 2000
OVERHEAD_OPEN_RATE = 2000.0  # requests/s for the open-loop no-op run: 0.25 s for 500 calls


def harness_overhead_ms(workload: Workload, mode: str = "closed", calls: int = OVERHEAD_CALLS) -> float:
    """The harness's own cost per call in ms, measured by driving a no-op target through the same loop.

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


@dataclass(frozen=True)
class Reference:
    """Fixed sample inputs and their pooled fp32 eager embeddings, to score every target against."""

    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    pooled: torch.Tensor  # (N, H)
    pooling: str


def make_reference(model: torch.nn.Module, sample: Batch) -> Reference:
    """Run the CPU fp32 eager model once on `sample` (its `pooling` as configured)."""
    inputs = sample.as_tuple()
    with torch.inference_mode():
        hidden = model(*inputs).float()
    pooling = model.config.pooling
    return Reference(inputs, pool(hidden, inputs[1], pooling, normalize=False), pooling)


def accuracy(run: Run, reference: Reference) -> float:
    """The lowest cosine similarity between a target's pooled embeddings and the reference's."""
    hidden = run(*reference.inputs)
    if not isinstance(hidden, torch.Tensor) or hidden.shape[:2] != reference.inputs[0].shape:
        shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise ShapeError(f"target returned {shape}, expected hidden states "
                         f"{tuple(reference.inputs[0].shape)} + (hidden,)")
    pooled = pool(hidden.detach().float().cpu(), reference.inputs[1], reference.pooling, normalize=False)
    return float(torch.nn.functional.cosine_similarity(pooled, reference.pooled, dim=-1).min())


def _loop_label(m: Measurement, arrival: str) -> str:
    if m.mode == "closed":
        return f"closed loop, {m.concurrency} worker{'s' if m.concurrency > 1 else ''}"
    return f"open loop, {arrival} {m.rate:g} req/s, {m.concurrency} worker{'s' if m.concurrency > 1 else ''}"


def to_row(m: Measurement, target: Target, workload: Workload, *, model: str, arrival: str = "poisson",
           accuracy_cosine_min: float | None = None, harness_overhead: float | None = None) -> BenchRow:
    """Statistics of one measurement as a result row; BenchmarkFailed if no call succeeded."""
    where = f"{target.name} b{workload.batch_size} s{workload.seq_len}"
    if m.calls == 0:
        raise BenchmarkFailed(f"{where}: every call failed ({m.errors} errors); first: {m.first_error}")
    real = workload.real_tokens
    tokens = sum(real[i] for i in m.batch_indices)
    samples = m.calls * workload.batch_size
    average, peak = window_throughput(m.completions_ns, workload.batch_size, m.start_ns, m.end_ns)
    label = "; ".join(part for part in (target.label, _loop_label(m, arrival)) if part)
    return BenchRow(
        backend=target.name, label=label, model=model, precision=target.precision,
        batch_size=workload.batch_size, seq_len=workload.seq_len, concurrency=m.concurrency, mode=m.mode,
        rate=m.rate, cores=target.cores, calls=m.calls, errors=m.errors, duration_s=m.duration_s,
        latency_ms=latency_summary(m.latencies_ns), throughput_avg=average, throughput_peak=peak,
        tokens_per_s=tokens / m.duration_s, padding_efficiency=tokens / (samples * workload.seq_len),
        cpu_percent=m.cpu_percent, mem_mb=m.rss_mb, accuracy_cosine_min=accuracy_cosine_min,
        harness_overhead_ms=harness_overhead, artifact_sha256=target.artifact_sha256,
    )


@dataclass(frozen=True)
class Point:
    """One configuration of a sweep, run on every target."""

    batch_size: int
    seq_len: int
    mode: str
    concurrency: int
    rate: float | None = None

    def describe(self) -> str:
        load = f"c{self.concurrency}" if self.mode == "closed" else f"{self.rate:g} req/s"
        return f"b{self.batch_size} s{self.seq_len} {load}"


def _rates(rates: Any) -> tuple[float, ...]:
    if rates is None:
        return ()
    items = [r for r in rates.split(",") if r.strip()] if isinstance(rates, str) else list(rates)
    checked = []
    for rate in items:
        try:
            value = float(rate)
        except (TypeError, ValueError):
            raise ConfigError(f"open-loop rates must be numbers of requests/s, got {rate!r}") from None
        if isinstance(rate, bool) or not value > 0 or not math.isfinite(value):
            raise ConfigError(f"open-loop rates must be positive requests/s, got {rate!r}")
        checked.append(value)
    return tuple(sorted(set(checked)))


@dataclass(frozen=True)
class Sweep:
    """What to measure on every target: batch sizes x sequence lengths x closed-loop concurrency,
    then the same batch/seq grid at each open-loop rate. Checked on construction (ConfigError).

    Each configuration runs `warmup` calls per worker, then until duration_s or `calls`, whichever
    comes first. Open-loop runs use open_workers threads (default: the largest concurrency).
    """

    batch_sizes: Sequence[int] | str
    seq_lens: Sequence[int] | str
    concurrency: Sequence[int] | str = (1,)
    rates: Sequence[float] | str | None = None
    duration_s: float | None = 2.0
    calls: int | None = None
    warmup: int = 3
    open_workers: int | None = None
    arrival: str = "poisson"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, what in (("batch_sizes", "batch sizes"), ("seq_lens", "sequence lengths"),
                           ("concurrency", "concurrency")):
            value = getattr(self, name)
            if value is None or (not isinstance(value, str) and len(value) == 0) or value == "":
                raise ConfigError(f"the sweep has no {what}: give at least one")
            object.__setattr__(self, name, tuple(parse_sizes(value, what)))
        object.__setattr__(self, "rates", _rates(self.rates))
        _check_bounds(self.duration_s, self.calls)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warm-up must be a number of calls >= 0, got {self.warmup!r}")
        if self.open_workers is not None:
            _check_positive_int("open-loop workers", self.open_workers)
        if self.arrival not in ARRIVALS:
            raise ConfigError(f"unknown arrival process {self.arrival!r}; choose one of {', '.join(ARRIVALS)}")

    @property
    def workers_for_open_loop(self) -> int:
        return self.open_workers or max(self.concurrency)

    def points(self) -> list[Point]:
        closed = [Point(b, s, "closed", c) for s in self.seq_lens for b in self.batch_sizes for c in self.concurrency]
        opened = [Point(b, s, "open", self.workers_for_open_loop, r)
                  for s in self.seq_lens for b in self.batch_sizes for r in self.rates]
        return closed + opened


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Eta:
    """Time left in a sweep: the mean time of the configurations measured so far (warm-up included)
    times those left; before the first, the configured duration. Builds (compiles, loads) are
    one-offs of unknown length, so the estimate names how many are still to come instead."""

    def __init__(self, total: int, guess_per_step_s: float | None) -> None:
        self.total, self.guess = total, guess_per_step_s
        self.done, self.seconds = 0, 0.0

    def step_done(self, seconds: float) -> None:
        self.done += 1
        self.seconds += seconds

    def left(self, pending_builds: int = 0) -> str:
        per_step = self.seconds / self.done if self.done else self.guess
        if per_step is None:
            text = "time left unknown"
        else:
            text = f"{format_seconds(per_step * (self.total - self.done))} left"
        if pending_builds:
            text += f" + {pending_builds} target build{'s' if pending_builds > 1 else ''}"
        return text


def run_sweep(targets: Sequence[Target | LazyTarget], sweep: Sweep, workload_for: Callable[[int, int], Workload],
              *, model: str, reference: Reference | None = None, slo_p99_ms: float | None = None,
              slo_search: str = "concurrency", max_concurrency: int = 64,
              progress: Progress | None = None) -> tuple[list[BenchRow], list[dict[str, Any]]]:
    """Every point of the sweep on every target -> (rows, slo entries), with progress and ETA.

    Per target, before its timed runs: the accuracy against `reference` (when given). After them,
    when slo_p99_ms is given: find_capacity at each batch size and the longest sequence length,
    keeping the batch size that serves the most within the SLO. The harness overhead is measured
    once per loop mode and written on every row of that mode.
    """
    if not targets:
        raise ConfigError("nothing to benchmark: no targets")
    if slo_p99_ms is not None and (isinstance(slo_p99_ms, bool) or not isinstance(slo_p99_ms, (int, float))
                                   or not slo_p99_ms > 0):
        raise ConfigError(f"the p99 SLO must be a positive number of ms, got {slo_p99_ms!r}")
    say = progress or (lambda message: None)
    points = sweep.points()
    total = len(targets) * len(points)
    eta = Eta(total, sweep.duration_s)
    workloads: dict[tuple[int, int], Workload] = {}

    def workload(batch_size: int, seq_len: int) -> Workload:
        if (batch_size, seq_len) not in workloads:
            workloads[(batch_size, seq_len)] = workload_for(batch_size, seq_len)
        return workloads[(batch_size, seq_len)]

    first = points[0]
    overhead = {mode: harness_overhead_ms(workload(first.batch_size, first.seq_len), mode)
                for mode in dict.fromkeys(p.mode for p in points)}
    say("harness overhead per call: " + ", ".join(f"{mode} loop {ms * 1000:.1f} us" for mode, ms in overhead.items()))

    rows: list[BenchRow] = []
    slo: list[dict[str, Any]] = []
    step = 0
    for position, item in enumerate(targets):
        pending_builds = sum(isinstance(t, LazyTarget) for t in targets[position + 1:])
        if isinstance(item, LazyTarget):
            say(f"preparing {item.name} ...")
            target = item.build()
        else:
            target = item
        cosine = None
        if reference is not None:
            try:
                cosine = accuracy(target.run, reference)
                say(f"{target.name}: min cosine vs CPU fp32 eager {cosine:.6f}")
            except Exception as exc:  # the timed runs will show the failure too, with counts
                say(f"{target.name}: accuracy check failed: {type(exc).__name__}: {exc}")
        for point in points:
            step += 1
            say(f"[{step}/{total}] {target.name} {point.describe()}: {eta.left(pending_builds)}")
            started = time.monotonic()
            data = workload(point.batch_size, point.seq_len)
            m = measure(target.run, data, mode=point.mode, concurrency=point.concurrency, rate=point.rate,
                        duration_s=sweep.duration_s, calls=sweep.calls, warmup=sweep.warmup,
                        arrival=sweep.arrival, seed=sweep.seed)
            row = to_row(m, target, data, model=model, arrival=sweep.arrival, accuracy_cosine_min=cosine,
                         harness_overhead=overhead[point.mode])
            rows.append(row)
            eta.step_done(time.monotonic() - started)
            errors = f", {row.errors} errors (first: {m.first_error})" if row.errors else ""
            few = f" (only {row.calls} calls: p99 is near the max; run longer)" if row.calls < FEW_CALLS else ""
            say(f"[{step}/{total}] {target.name} {point.describe()}: p50 {row.latency_ms['p50']:.2f} ms, "
                f"p99 {row.latency_ms['p99']:.2f} ms{few}, {row.throughput_avg:.1f} inf/s{errors}")
        if slo_p99_ms is not None:
            entries = [find_capacity(target, slo_p99_ms, workload(batch_size, max(sweep.seq_lens)),
                                     search=slo_search, max_concurrency=max_concurrency,
                                     open_workers=sweep.open_workers, duration_s=sweep.duration_s,
                                     calls=sweep.calls, warmup=sweep.warmup, arrival=sweep.arrival,
                                     seed=sweep.seed, progress=say)
                       for batch_size in sweep.batch_sizes]
            best = max(entries, key=lambda e: (e["met"], e["best_throughput"], -e["p99_ms"]))
            best["other_batch_sizes"] = [{key: e[key] for key in ("batch_size", "best_throughput", "at_concurrency",
                                                                  "p99_ms", "met")}
                                         for e in entries if e is not best]
            slo.append(best)
            say(f"{target.name}: best within p99 {slo_p99_ms:g} ms: {best['best_throughput']:.1f} inf/s "
                f"(batch {best['batch_size']}, concurrency {best['at_concurrency']}, p99 {best['p99_ms']:.2f} ms)"
                if best["met"] else f"{target.name}: no load met p99 {slo_p99_ms:g} ms "
                                    f"(lowest p99 {best['p99_ms']:.2f} ms)")
        del target  # a LazyTarget's model (and its NeuronCores) is freed before the next one is built
        gc.collect()
    return rows, slo


def find_capacity(target: Target, slo_p99_ms: float, workload: Workload, *, search: str = "concurrency",
                  max_concurrency: int = 64, start_rate: float | None = None, open_workers: int | None = None,
                  duration_s: float | None = 2.0, calls: int | None = None, warmup: int = 3,
                  arrival: str = "poisson", seed: int = 0, rate_tolerance: float = 0.1, max_probes: int = 16,
                  progress: Progress | None = None) -> dict[str, Any]:
    """The highest throughput whose p99 latency stays within slo_p99_ms (and without errors).

    search="concurrency": closed loop at 1, 2, 4, ... workers until the SLO breaks (or throughput
    stops growing for two doublings, or max_concurrency), then bisect between the last good and
    the first bad count. search="rate": open loop (latency from scheduled send time, so queueing
    counts) from start_rate (default: half the one-worker call rate), doubling until the SLO
    breaks, then bisecting until the bounds are within rate_tolerance.
    Both assume p99 grows with load; every probe is kept in "probes".
    Returns the entry for BenchResult.slo: {backend, slo_p99_ms, best_throughput, at_concurrency,
    p99_ms} plus search, rate, met, batch_size, seq_len, precision, stopped, probes.
    """
    if isinstance(slo_p99_ms, bool) or not isinstance(slo_p99_ms, (int, float)) or not slo_p99_ms > 0:
        raise ConfigError(f"the p99 SLO must be a positive number of ms, got {slo_p99_ms!r}")
    if search not in ("concurrency", "rate"):
        raise ConfigError(f"unknown capacity search {search!r}; choose concurrency or rate")
    _check_positive_int("max concurrency", max_concurrency)
    _check_bounds(duration_s, calls)
    say = progress or (lambda message: None)
    probes: list[dict[str, Any]] = []

    def probe(concurrency: int, rate: float | None = None) -> dict[str, Any]:
        m = measure(target.run, workload, mode="closed" if rate is None else "open", concurrency=concurrency,
                    rate=rate, duration_s=duration_s, calls=calls, warmup=warmup, arrival=arrival, seed=seed)
        p99 = latency_summary(m.latencies_ns)["p99"] if m.calls else None
        throughput = window_throughput(m.completions_ns, workload.batch_size, m.start_ns, m.end_ns)[0] \
            if m.calls else 0.0
        result = {"concurrency": concurrency, "rate": rate, "p99_ms": p99, "throughput": throughput,
                  "errors": m.errors, "ok": p99 is not None and p99 <= slo_p99_ms and m.errors == 0}
        probes.append(result)
        load = f"c{concurrency}" if rate is None else f"{rate:.4g} req/s"
        p99_text = f"{p99:.2f} ms" if p99 is not None else "n/a"
        say(f"SLO {slo_p99_ms:g} ms, {target.name} b{workload.batch_size} s{workload.seq_len} {load}: "
            f"p99 {p99_text}, {throughput:.1f} inf/s, {'within' if result['ok'] else 'over'}")
        return result

    if search == "concurrency":
        stopped = _search_concurrency(probe, max_concurrency, max_probes)
        workers = None
    else:
        workers = open_workers or max(4, 2 * target.cores)
        _check_positive_int("open-loop workers", workers)
        if start_rate is None:
            single = probe(1)
            calls_per_s = single["throughput"] / workload.batch_size
            start_rate = max(calls_per_s / 2, 1e-3) if calls_per_s > 0 else 1.0
        stopped = _search_rate(lambda rate: probe(workers, rate), start_rate, rate_tolerance, max_probes)

    measured = [p for p in probes if p["p99_ms"] is not None]
    if not measured:
        raise BenchmarkFailed(f"{target.name}: every call of the capacity search failed")
    candidates = [p for p in probes if p["ok"] and (search == "concurrency" or p["rate"] is not None)]
    best = max(candidates, key=lambda p: (p["throughput"], -p["concurrency"])) if candidates else None
    return {
        "backend": target.name,
        "slo_p99_ms": float(slo_p99_ms),
        "best_throughput": best["throughput"] if best else 0.0,
        "at_concurrency": best["concurrency"] if best else (workers or 1),
        "p99_ms": best["p99_ms"] if best else min(p["p99_ms"] for p in measured),
        "met": best is not None,
        "search": search,
        "rate": best["rate"] if best else None,
        "batch_size": workload.batch_size,
        "seq_len": workload.seq_len,
        "precision": target.precision,
        "stopped": stopped,
        "probes": probes,
    }


def _search_concurrency(probe: Callable[[int], dict[str, Any]], max_concurrency: int, max_probes: int) -> str:
    good, bad, flat = 0, None, 0
    best_throughput = 0.0
    concurrency = 1
    stopped = "max concurrency"
    while concurrency <= max_concurrency:
        result = probe(concurrency)
        if not result["ok"]:
            bad = concurrency
            stopped = "SLO exceeded"
            break
        good = concurrency
        flat = flat + 1 if result["throughput"] < 1.05 * best_throughput else 0
        best_throughput = max(best_throughput, result["throughput"])
        if flat >= 2:
            return "throughput stopped growing"
        if concurrency == max_concurrency:
            break
        concurrency = min(2 * concurrency, max_concurrency)
    probes = 0
    while bad is not None and good and bad - good > 1 and probes < max_probes:
        middle = (good + bad) // 2
        if probe(middle)["ok"]:
            good = middle
        else:
            bad = middle
        probes += 1
    return stopped


def _search_rate(probe: Callable[[float], dict[str, Any]], start_rate: float, tolerance: float,
                 max_probes: int) -> str:
    good, bad = None, None
    rate = start_rate
    for _ in range(max_probes):
        if probe(rate)["ok"]:
            good = rate
            if bad is None:
                rate *= 2
                continue
        else:
            bad = rate
            if good is None:
                rate /= 2
                continue
        if bad / good <= 1 + tolerance:
            return "SLO bound found"
        rate = math.sqrt(good * bad)  # bisect in log space: rates span orders of magnitude
    return "probe limit"

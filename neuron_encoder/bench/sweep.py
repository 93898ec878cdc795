"""A sweep: every configuration (batch x sequence x load) on every engine, each measurement turned
into a result row, with progress and an ETA; accuracy first, the SLO search after, when asked."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from neuron_encoder.bench import checks
from neuron_encoder.bench.accuracy import Reference, accuracy, logit_accuracy
from neuron_encoder.bench.capacity import find_capacity
from neuron_encoder.bench.loop import Measurement, harness_overhead_ms, measure
from neuron_encoder.bench.results import BenchRow
from neuron_encoder.bench.stats import latency_summary, window_throughput
from neuron_encoder.bench.engines import LazyEngine, Engine
from neuron_encoder.bench.workload import Workload
from neuron_encoder.errors import BenchmarkFailed, ConfigError, NeuronEncoderError
from neuron_encoder.options import parse_sizes

Progress = Callable[[str], None]
FEW_CALLS = 100  # below this a p99 is little more than the slowest call


def _loop_label(m: Measurement, arrival: str, threads: str | None) -> str:
    workers = f"{m.concurrency} worker{'s' if m.concurrency > 1 else ''}"
    loop = (f"closed loop, {workers}" if m.mode == "closed"
            else f"open loop, {arrival} {m.rate:g} req/s, {workers}")
    return f"{loop}, {threads}" if threads else loop


def to_row(m: Measurement, engine: Engine, workload: Workload, *, model: str, arrival: str = "poisson",
           accuracy_cosine_min: float | None = None, harness_overhead: float | None = None,
           task: str = "embedding", accuracy_logit_max_abs: float | None = None,
           accuracy_top1: float | None = None) -> BenchRow:
    """Statistics of one measurement as a result row; BenchmarkFailed if no call succeeded."""
    where = f"{engine.name} b{workload.batch_size} s{workload.seq_len}"
    if m.calls == 0:
        raise BenchmarkFailed(f"{where}: every call failed ({m.errors} errors); first: {m.first_error}")
    plan = engine.thread_plan(m.concurrency)
    real = workload.real_tokens
    tokens = sum(real[i] for i in m.batch_indices)
    samples = m.calls * workload.batch_size
    average, peak = window_throughput(m.completions_ns, workload.batch_size, m.start_ns, m.end_ns)
    label = "; ".join(part for part in (engine.label, _loop_label(m, arrival, plan and plan.describe())) if part)
    return BenchRow(
        engine=engine.name, label=label, model=model, precision=engine.precision,
        batch_size=workload.batch_size, seq_len=workload.seq_len, concurrency=m.concurrency, mode=m.mode,
        rate=m.rate, cores=engine.cores, threads_per_worker=plan.threads_per_worker if plan else None,
        oversubscribed=plan.oversubscribed if plan else False, calls=m.calls, errors=m.errors,
        duration_s=m.duration_s, latency_ms=latency_summary(m.latencies_ns), throughput_avg=average,
        throughput_peak=peak, tokens_per_s=tokens / m.duration_s,
        padding_efficiency=tokens / (samples * workload.seq_len), cpu_percent=m.cpu_percent, mem_mb=m.rss_mb,
        accuracy_cosine_min=accuracy_cosine_min, harness_overhead_ms=harness_overhead,
        artifact_sha256=engine.artifact_sha256, task=task, accuracy_logit_max_abs=accuracy_logit_max_abs,
        accuracy_top1=accuracy_top1,
    )


@dataclass(frozen=True)
class Point:
    """One configuration of a sweep, run on every engine."""

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
        checks.positive_number("an open-loop rate (requests/s)", False if isinstance(rate, bool) else value)
        checked.append(value)
    return tuple(sorted(set(checked)))


@dataclass(frozen=True)
class Sweep:
    """What to measure on every engine: batch sizes x sequence lengths x closed-loop concurrency,
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
        checks.bounds(self.duration_s, self.calls)
        checks.warmup_calls(self.warmup)
        if self.open_workers is not None:
            checks.positive_int("open-loop workers", self.open_workers)
        checks.choice("arrival process", self.arrival, checks.ARRIVALS)

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

    def skip(self, steps: int) -> None:
        self.total -= steps

    def left(self, pending_builds: int = 0) -> str:
        per_step = self.seconds / self.done if self.done else self.guess
        text = "time left unknown" if per_step is None else \
            f"{format_seconds(per_step * (self.total - self.done))} left"
        if pending_builds:
            text += f" + {pending_builds} engine build{'s' if pending_builds > 1 else ''}"
        return text


@dataclass
class SweepOutcome:
    """What a sweep produced: rows, SLO entries, and the engines that failed (each with why)."""

    rows: list[BenchRow] = field(default_factory=list)
    slo: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _SweepRun:
    """What every engine of one sweep is run with, and where its results go."""

    sweep: Sweep
    points: list[Point]
    workload: Callable[[int, int], Workload]  # cached per (batch size, sequence length)
    overhead: dict[str, float]  # the harness's ms per call, per loop mode
    eta: Eta
    model: str
    reference: Reference | None
    slo_p99_ms: float | None
    slo_search: str
    max_concurrency: int
    outcome: SweepOutcome
    say: Progress


def run_sweep(engines: Sequence[Engine | LazyEngine], sweep: Sweep, workload_for: Callable[[int, int], Workload],
              *, model: str, reference: Reference | None = None, slo_p99_ms: float | None = None,
              slo_search: str = "concurrency", max_concurrency: int = 64,
              progress: Progress | None = None) -> SweepOutcome:
    """Every point of the sweep on every engine, with progress and ETA.

    Per engine, before its timed runs: the accuracy against `reference` (when given); a engine whose
    outputs are not hidden states, or whose every call fails, is a failure: it is reported, gets no
    rows, and the sweep goes on to the next. After the timed runs, when slo_p99_ms is given:
    find_capacity at each batch size and the longest sequence length, keeping the batch size that
    serves the most within the SLO. The harness overhead is measured once per loop mode.
    """
    if not engines:
        raise ConfigError("nothing to benchmark: no engines")
    checks.slo_ms(slo_p99_ms)
    say = progress or (lambda message: None)
    points = sweep.points()
    eta = Eta(len(engines) * len(points), sweep.duration_s)
    workloads: dict[tuple[int, int], Workload] = {}

    def workload(batch_size: int, seq_len: int) -> Workload:
        if (batch_size, seq_len) not in workloads:
            workloads[(batch_size, seq_len)] = workload_for(batch_size, seq_len)
        return workloads[(batch_size, seq_len)]

    first = points[0]
    overhead = {mode: harness_overhead_ms(workload(first.batch_size, first.seq_len), mode)
                for mode in dict.fromkeys(p.mode for p in points)}
    say("harness overhead per call: " + ", ".join(f"{mode} loop {ms * 1000:.1f} us" for mode, ms in overhead.items()))
    outcome = SweepOutcome()
    run = _SweepRun(sweep, points, workload, overhead, eta, model, reference, slo_p99_ms, slo_search, max_concurrency,
                    outcome, say)
    for position, item in enumerate(engines):
        pending = sum(isinstance(t, LazyEngine) for t in engines[position + 1:])
        name = item.name
        try:
            if isinstance(item, LazyEngine):
                say(f"preparing {name} ...")
            engine = item.build() if isinstance(item, LazyEngine) else item
        except NeuronEncoderError as error:  # a compile or load that failed: this engine only
            say(f"FAILED {name}: {type(error).__name__}: {error}")
            outcome.failures.append({"engine": name, "error": f"{type(error).__name__}: {error}"})
            eta.skip(len(points))
            continue
        try:
            _sweep_engine(run, engine, pending)
        finally:
            engine.close()  # a LazyEngine's model (and its NeuronCores) goes before the next is built
    return outcome


def _sweep_engine(run: _SweepRun, engine: Engine, pending: int) -> None:
    """One engine's accuracy, timed points and SLO search; a failure is recorded, not raised.
    `pending`: the engines still to build, for the ETA."""
    sweep, points, workload, eta, say, outcome = run.sweep, run.points, run.workload, run.eta, run.say, run.outcome
    rows: list[BenchRow] = []
    try:
        cosine, scored = None, {}
        if run.reference is not None and run.reference.pooling == "logits":
            scored = {"task": run.reference.task, **logit_accuracy(engine.run, run.reference)}
            say(f"{engine.name}: max |logit difference| vs CPU fp32 eager {scored['accuracy_logit_max_abs']:.2e}, "
                f"top-1 agreement {scored['accuracy_top1']:.0%}")
        elif run.reference is not None:
            cosine = accuracy(engine.run, run.reference)
            say(f"{engine.name}: min cosine vs CPU fp32 eager {cosine:.6f}")
        for step, point in enumerate(points, eta.done + 1):
            say(f"[{step}/{eta.total}] {engine.name} {point.describe()}: {eta.left(pending)}")
            started = time.monotonic()
            data = workload(point.batch_size, point.seq_len)
            m = measure(engine.run, data, mode=point.mode, concurrency=point.concurrency, rate=point.rate,
                        duration_s=sweep.duration_s, calls=sweep.calls, warmup=sweep.warmup,
                        arrival=sweep.arrival, seed=sweep.seed, threads=engine.thread_plan(point.concurrency))
            row = to_row(m, engine, data, model=run.model, arrival=sweep.arrival, accuracy_cosine_min=cosine,
                         harness_overhead=run.overhead[point.mode], **scored)
            rows.append(row)
            eta.step_done(time.monotonic() - started)
            errors = f", {row.errors} errors (first: {m.first_error})" if row.errors else ""
            few = f" (only {row.calls} calls: p99 is near the max; run longer)" if row.calls < FEW_CALLS else ""
            say(f"[{step}/{eta.total}] {engine.name} {point.describe()}: p50 {row.latency_ms['p50']:.2f} ms, "
                f"p99 {row.latency_ms['p99']:.2f} ms{few}, {row.throughput_avg:.1f} inf/s{errors}")
        if run.slo_p99_ms is not None:
            outcome.slo.append(_best_within_slo(run, engine))
    except Exception as error:  # this engine failed: say so loudly, keep the others
        message = f"{type(error).__name__}: {error}"
        say(f"FAILED {engine.name}: {message}; its rows are left out")
        outcome.failures.append({"engine": engine.name, "error": message})
        eta.skip(len(points) - len(rows))
        return
    outcome.rows.extend(rows)


def _best_within_slo(run: _SweepRun, engine: Engine) -> dict[str, Any]:
    """find_capacity at every batch size; the batch size that serves the most within the SLO wins."""
    sweep, slo_p99_ms, say = run.sweep, run.slo_p99_ms, run.say
    entries = [find_capacity(engine, slo_p99_ms, run.workload(batch_size, max(sweep.seq_lens)), search=run.slo_search,
                             max_concurrency=run.max_concurrency, open_workers=sweep.open_workers,
                             duration_s=sweep.duration_s, calls=sweep.calls, warmup=sweep.warmup,
                             arrival=sweep.arrival, seed=sweep.seed, progress=say)
               for batch_size in sweep.batch_sizes]
    best = max(entries, key=lambda e: (e["met"], e["best_throughput"], -e["p99_ms"]))
    best["other_batch_sizes"] = [{key: e[key] for key in ("batch_size", "best_throughput", "at_concurrency",
                                                          "p99_ms", "met")}
                                 for e in entries if e is not best]
    say(f"{engine.name}: best within p99 {slo_p99_ms:g} ms: {best['best_throughput']:.1f} inf/s "
        f"(batch {best['batch_size']}, concurrency {best['at_concurrency']}, p99 {best['p99_ms']:.2f} ms)"
        if best["met"] else f"{engine.name}: no load met p99 {slo_p99_ms:g} ms "
                            f"(lowest p99 {best['p99_ms']:.2f} ms)")
    return best

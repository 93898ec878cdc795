"""The capacity search: the highest throughput a engine sustains while its p99 stays within an SLO."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from neuron_encoder.bench import checks
from neuron_encoder.bench.loop import Measurement, measure
from neuron_encoder.bench.stats import latency_summary, window_throughput
from neuron_encoder.bench.engines import Engine
from neuron_encoder.bench.workload import Workload
from neuron_encoder.errors import BenchmarkFailed

Progress = Callable[[str], None]


def find_capacity(engine: Engine, slo_p99_ms: float, workload: Workload, *, search: str = "concurrency",
                  max_concurrency: int = 64, start_rate: float | None = None, open_workers: int | None = None,
                  duration_s: float | None = 2.0, calls: int | None = None, warmup: int = 3,
                  arrival: str = "poisson", seed: int = 0, rate_tolerance: float = 0.1, max_probes: int = 16,
                  progress: Progress | None = None, measure_fn: Callable[..., Measurement] = measure) -> dict[str, Any]:
    """The highest throughput whose p99 latency stays within slo_p99_ms (and without errors).

    search="concurrency": closed loop at 1, 2, 4, ... workers until the SLO breaks (or throughput
    stops growing for two doublings, or max_concurrency), then bisect between the last good and
    the first bad count. search="rate": open loop (latency from scheduled send time, so queueing
    counts) from start_rate (default: half the one-worker call rate), doubling until the SLO
    breaks, then bisecting until the bounds are within rate_tolerance.
    Both assume p99 grows with load; every probe is kept in "probes". `measure_fn` times one probe
    (loop.measure; the tests give a queueing model, so the search is checked without a clock).
    Returns the entry for BenchResult.slo: {engine, slo_p99_ms, best_throughput, at_concurrency,
    p99_ms} plus search, rate, met, batch_size, seq_len, precision, stopped, probes.
    """
    checks.slo_ms(slo_p99_ms)
    checks.choice("capacity search", search, checks.SLO_SEARCHES)
    checks.positive_int("max concurrency", max_concurrency)
    checks.bounds(duration_s, calls)
    say = progress or (lambda message: None)
    probes: list[dict[str, Any]] = []

    def probe(concurrency: int, rate: float | None = None) -> dict[str, Any]:
        m = measure_fn(engine.run, workload, mode="closed" if rate is None else "open", concurrency=concurrency,
                    rate=rate, duration_s=duration_s, calls=calls, warmup=warmup, arrival=arrival, seed=seed,
                    threads=engine.thread_plan(concurrency))
        p99 = latency_summary(m.latencies_ns)["p99"] if m.calls else None
        throughput = window_throughput(m.completions_ns, workload.batch_size, m.start_ns, m.end_ns)[0] \
            if m.calls else 0.0
        result = {"concurrency": concurrency, "rate": rate, "p99_ms": p99, "throughput": throughput,
                  "errors": m.errors, "ok": p99 is not None and p99 <= slo_p99_ms and m.errors == 0}
        probes.append(result)
        load = f"c{concurrency}" if rate is None else f"{rate:.4g} req/s"
        p99_text = f"{p99:.2f} ms" if p99 is not None else "n/a"
        say(f"SLO {slo_p99_ms:g} ms, {engine.name} b{workload.batch_size} s{workload.seq_len} {load}: "
            f"p99 {p99_text}, {throughput:.1f} inf/s, {'within' if result['ok'] else 'over'}")
        return result

    if search == "concurrency":
        stopped = _search_concurrency(probe, max_concurrency, max_probes)
        workers = None
    else:
        workers = checks.positive_int("open-loop workers", open_workers or max(4, 2 * engine.cores))
        if start_rate is None:
            calls_per_s = probe(1)["throughput"] / workload.batch_size
            start_rate = max(calls_per_s / 2, 1e-3) if calls_per_s > 0 else 1.0
        stopped = _search_rate(lambda rate: probe(workers, rate), start_rate, rate_tolerance, max_probes)
    return _entry(engine, slo_p99_ms, workload, search, workers, stopped, probes)


def _entry(engine: Engine, slo_p99_ms: float, workload: Workload, search: str, workers: int | None,
           stopped: str, probes: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [p for p in probes if p["p99_ms"] is not None]
    if not measured:
        raise BenchmarkFailed(f"{engine.name}: every call of the capacity search failed")
    candidates = [p for p in probes if p["ok"] and (search == "concurrency" or p["rate"] is not None)]
    best = max(candidates, key=lambda p: (p["throughput"], -p["concurrency"])) if candidates else None
    return {
        "engine": engine.name,
        "slo_p99_ms": float(slo_p99_ms),
        "best_throughput": best["throughput"] if best else 0.0,
        "at_concurrency": best["concurrency"] if best else (workers or 1),
        "p99_ms": best["p99_ms"] if best else min(p["p99_ms"] for p in measured),
        "met": best is not None,
        "search": search,
        "rate": best["rate"] if best else None,
        "batch_size": workload.batch_size,
        "seq_len": workload.seq_len,
        "precision": engine.precision,
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

"""Latency percentiles, windowed throughput and cost: the numbers a benchmark row reports.

Pure Python on purpose: the same arithmetic runs on a bare inf2 host, a GPU box and in tests,
and its answers can be checked by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LATENCY_KEYS = ("p50", "p90", "p95", "p99", "max", "mean", "min")

_NS_PER_MS = 1e6
_NS_PER_S = 1e9


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, by linear interpolation.

    Same rule as numpy.percentile's default ("linear"): rank = q/100 * (n - 1), then interpolate
    between the two neighbouring order statistics. So 1..100 gives p50 = 50.5 and p99 = 99.01.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    rank = q / 100.0 * (len(sorted_values) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float]:
    """Per-call latencies in nanoseconds -> {p50, p90, p95, p99, max, mean, min} in milliseconds.

    Percentiles use linear interpolation (see `percentile`), so they match numpy's default and
    NeuronPerf's latency_ms_pXX columns are comparable.
    """
    if len(latencies_ns) == 0:
        raise ValueError("latency_summary needs at least one latency; got none (did every call fail?)")
    if any(v < 0 for v in latencies_ns):
        raise ValueError(f"latencies must be >= 0 ns; smallest given is {min(latencies_ns)}")
    values_ms = sorted(v / _NS_PER_MS for v in latencies_ns)
    summary = {f"p{q}": percentile(values_ms, q) for q in (50, 90, 95, 99)}
    summary["max"] = values_ms[-1]
    summary["mean"] = math.fsum(values_ms) / len(values_ms)
    summary["min"] = values_ms[0]
    return {key: float(summary[key]) for key in LATENCY_KEYS}


def window_throughput(
    completions_ns: Sequence[int],
    samples_per_call: Sequence[int] | int,
    start_ns: int,
    end_ns: int,
    window_s: float = 1.0,
) -> tuple[float, float]:
    """(average, peak) inferences per second from call completion times.

    average = all samples / (end_ns - start_ns). peak = the busiest of the consecutive, full
    windows of `window_s` laid from start_ns (NeuronPerf's throughput_peak uses 1 s windows);
    a trailing partial window is left out because it would be scaled up from too few calls.
    When the span is shorter than one window there is no full window and peak = average.
    A completion exactly at end_ns counts in the last window.
    """
    if len(completions_ns) == 0:
        raise ValueError("window_throughput needs at least one completed call; got none")
    if end_ns <= start_ns:
        raise ValueError(f"end_ns ({end_ns}) must be after start_ns ({start_ns})")
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    if isinstance(samples_per_call, int):
        samples = [samples_per_call] * len(completions_ns)
    else:
        samples = list(samples_per_call)
        if len(samples) != len(completions_ns):
            raise ValueError(
                f"samples_per_call has {len(samples)} entries for {len(completions_ns)} completions"
            )
    if any(s < 0 for s in samples):
        raise ValueError("samples_per_call must be >= 0")
    outside = [t for t in completions_ns if not start_ns <= t <= end_ns]
    if outside:
        raise ValueError(
            f"{len(outside)} completion(s) fall outside [start_ns, end_ns] = [{start_ns}, {end_ns}],"
            f" e.g. {outside[0]}; pass only the measured calls, not warm-up"
        )

    span_ns = end_ns - start_ns
    average = sum(samples) / (span_ns / _NS_PER_S)
    window_ns = window_s * _NS_PER_S
    full_windows = int(span_ns // window_ns)
    if full_windows == 0:
        return average, average

    per_window = [0] * full_windows
    for t, s in zip(completions_ns, samples):
        index = int((t - start_ns) // window_ns)
        if index == full_windows and t == end_ns and full_windows * window_ns == span_ns:
            index -= 1
        if index < full_windows:
            per_window[index] += s
    return average, max(per_window) / window_s


def cost_per_million(throughput_per_s: float, price_per_h: float) -> float:
    """USD per one million inferences at a sustained throughput and an hourly instance price.

    1e6 / throughput * price / 3600: the instance is paid by the hour whether busy or not, so
    this is the cost of keeping it busy at the measured rate.
    """
    if not throughput_per_s > 0:
        raise ValueError(f"throughput must be > 0 inferences/s to price it, got {throughput_per_s}")
    if not price_per_h >= 0:
        raise ValueError(f"price per hour must be >= 0 USD, got {price_per_h}")
    return 1e6 / throughput_per_s * price_per_h / 3600.0

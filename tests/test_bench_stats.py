"""Benchmark statistics against synthetic timings whose answers are known by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest

from neuron_encoder.bench.stats import LATENCY_KEYS, cost_per_million, latency_summary, percentile, window_throughput

MS = 1_000_000  # ns per ms
S = 1_000_000_000  # ns per s


def test_latency_summary_of_1_to_100_ms():
    summary = latency_summary([i * MS for i in range(1, 101)])
    assert list(summary) == list(LATENCY_KEYS)
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p90"] == pytest.approx(90.1)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == pytest.approx(100.0)
    assert summary["min"] == pytest.approx(1.0)
    assert summary["mean"] == pytest.approx(50.5)
    assert all(isinstance(v, float) for v in summary.values())


def test_latency_summary_ignores_input_order():
    values = [i * MS for i in range(1, 101)]
    shuffled = values[:]
    random.Random(0).shuffle(shuffled)
    assert latency_summary(shuffled) == latency_summary(values)


def test_latency_summary_matches_numpy_default_percentiles():
    rng = random.Random(42)
    values = [rng.randint(200_000, 50_000_000) for _ in range(997)]
    summary = latency_summary(values)
    as_ms = np.array(values) / 1e6
    for q in (50, 90, 95, 99):
        assert summary[f"p{q}"] == pytest.approx(float(np.percentile(as_ms, q)), rel=1e-12)
    assert summary["mean"] == pytest.approx(float(as_ms.mean()), rel=1e-12)


def test_latency_summary_of_one_call():
    summary = latency_summary([2_500_000])
    assert set(summary.values()) == {2.5}


def test_percentile_bounds_and_interpolation():
    assert percentile([10.0, 20.0], 0) == 10.0
    assert percentile([10.0, 20.0], 100) == 20.0
    assert percentile([10.0, 20.0], 25) == pytest.approx(12.5)
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], 101)


def test_latency_summary_rejects_empty_and_negative():
    with pytest.raises(ValueError, match="at least one latency"):
        latency_summary([])
    with pytest.raises(ValueError, match=">= 0"):
        latency_summary([5, -1])


def test_evenly_spaced_completions_give_flat_throughput():
    # 1000 calls of batch 4, one every 10 ms (mid-slot) over 10 s: 400 inf/s in every window.
    completions = [k * 10 * MS + 5 * MS for k in range(1000)]
    average, peak = window_throughput(completions, 4, 0, 10 * S)
    assert average == pytest.approx(400.0)
    assert peak == pytest.approx(400.0)


def test_completion_at_end_counts_in_last_window():
    average, peak = window_throughput([int(1.5 * S), 2 * S], 1, 0, 2 * S)
    assert average == pytest.approx(1.0)
    assert peak == pytest.approx(2.0)


def test_burst_in_one_window_sets_the_peak():
    # One call per second, plus 50 more inside the fourth second: peak 51/s, average 60/10 s.
    completions = [int((k + 0.5) * S) for k in range(10)]
    completions += [3 * S + j * 10 * MS for j in range(1, 51)]
    average, peak = window_throughput(sorted(completions), 1, 0, 10 * S)
    assert average == pytest.approx(6.0)
    assert peak == pytest.approx(51.0)


def test_samples_per_call_sequence_is_summed_per_window():
    completions = [int(0.2 * S), int(0.7 * S), int(1.5 * S)]
    average, peak = window_throughput(completions, [8, 8, 1], 0, 2 * S)
    assert average == pytest.approx(17 / 2)
    assert peak == pytest.approx(16.0)


def test_start_offset_and_half_second_windows():
    start = 123 * S
    completions = [start + int(0.1 * S), start + int(0.2 * S), start + int(0.6 * S)]
    average, peak = window_throughput(completions, 1, start, start + S, window_s=0.5)
    assert average == pytest.approx(3.0)
    assert peak == pytest.approx(4.0)  # two calls in the first 0.5 s window


def test_span_shorter_than_a_window_gives_peak_equal_to_average():
    completions = [k * 50 * MS for k in range(1, 11)]
    average, peak = window_throughput(completions, 1, 0, 500 * MS)
    assert average == pytest.approx(20.0)
    assert peak == average


def test_trailing_partial_window_is_left_out_of_the_peak():
    # 10 calls in the first (full) second, 30 in the last half second: the half window is not scaled up.
    completions = [k * 90 * MS for k in range(1, 11)]
    completions += [S + int(0.5 * S * j / 31) for j in range(1, 31)]
    average, peak = window_throughput(completions, 1, 0, int(1.5 * S))
    assert average == pytest.approx(40 / 1.5)
    assert peak == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([], 1, 0, S), "at least one completed call"),
        (([S], 1, S, S), "must be after"),
        (([S // 2], 1, 0, S, 0.0), "window_s"),
        (([S // 2, S], [1], 0, S), "1 entries for 2 completions"),
        (([2 * S], 1, 0, S), "outside"),
        (([S // 2], -1, 0, S), ">= 0"),
    ],
)
def test_window_throughput_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        window_throughput(*args)


def test_cost_per_million_for_inf2_xlarge():
    # 1e6 / 2000 * 0.7582 / 3600 = 0.105305...
    assert cost_per_million(2000, 0.7582) == pytest.approx(0.1053055556, rel=1e-9)
    assert cost_per_million(4000, 0.7582) == pytest.approx(cost_per_million(2000, 0.7582) / 2)


@pytest.mark.parametrize("throughput", [0, -5.0])
def test_cost_per_million_rejects_no_throughput(throughput):
    with pytest.raises(ValueError, match="throughput"):
        cost_per_million(throughput, 0.7582)


def test_cost_per_million_rejects_negative_price():
    with pytest.raises(ValueError, match="price"):
        cost_per_million(100, -1.0)

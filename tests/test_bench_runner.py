"""The benchmark loop on synthetic targets: what is counted, how the statistics are wired, the sweep,
progress, and the SLO capacity search on a backend whose latency grows with load. No speed asserted:
where the wall clock matters, the margins are several times the expected values.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import torch

from neuron_encoder.bench.results import BenchRow
from neuron_encoder.bench.runner import (BenchmarkFailed, Eta, LazyTarget, Measurement, Sweep, Target, accuracy,
                                         arrival_offsets, find_capacity, format_seconds, harness_overhead_ms,
                                         make_reference, measure, run_sweep, to_row)
from neuron_encoder.bench.workload import Workload, synthetic_workload
from neuron_encoder.errors import ConfigError, NeuronEncoderError, ShapeError
from neuron_encoder.text import Batch

HIDDEN = 8


@pytest.fixture(scope="module")
def workload(tiny_config) -> Workload:
    return synthetic_workload(tiny_config, batch_size=2, seq_len=16, pool=4)


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


def target(run, name="synthetic") -> Target:
    return Target(name=name, precision="fp32", cores=1, run=run)


# --- the loops -----------------------------------------------------------------------------------

def test_closed_loop_counts_exactly_the_measured_calls(workload):
    run = Counting()
    m = measure(run, workload, concurrency=3, calls=30, warmup=2)
    assert m.calls == 30 and len(m.completions_ns) == 30 and m.errors == 0
    assert next(run.calls) == 30 + 3 * 2 + 1  # warm-up ran on every worker and is not counted
    assert all(m.start_ns <= t <= m.end_ns for t in m.completions_ns)
    assert all(latency > 0 for latency in m.latencies_ns)
    assert set(m.batch_indices) == set(range(len(workload.batches)))  # the whole pool is used


def test_closed_loop_bounded_by_duration(workload):
    m = measure(Counting(), workload, concurrency=2, duration_s=0.05, warmup=0)
    assert m.calls > 0
    assert m.duration_s >= 0.05


def test_errors_are_counted_not_fatal(workload):
    m = measure(Counting(fail_every=3), workload, concurrency=1, calls=30, warmup=0)
    assert (m.calls, m.errors) == (20, 10)
    assert m.first_error == "RuntimeError: synthetic failure 3"
    row = to_row(m, target(Counting()), workload, model="m")
    assert (row.calls, row.errors) == (20, 10)


def test_a_configuration_where_every_call_fails_is_an_error(workload):
    def broken(*inputs):
        raise ValueError("no device")

    m = measure(broken, workload, calls=5, warmup=1)
    assert (m.calls, m.errors) == (0, 5)
    with pytest.raises(BenchmarkFailed, match="every call failed .*ValueError: no device") as info:
        to_row(m, target(broken), workload, model="m")
    assert isinstance(info.value, NeuronEncoderError)


def test_open_loop_latency_includes_the_queue(workload):
    # One worker, a call every 10 ms, each call taking 30 ms: request k waits about 20 ms x k.
    server = SlotServer(slots=1, service_s=0.03)
    m = measure(server, workload, mode="open", concurrency=1, rate=100, calls=8, warmup=0, arrival="fixed")
    assert m.calls == 8 and m.mode == "open" and m.rate == 100
    latencies_ms = [t / 1e6 for t in m.latencies_ns]
    assert latencies_ms[-1] > latencies_ms[0] + 60  # ~140 ms more; a service-time-only clock would show ~0


def test_open_loop_drops_requests_that_never_start(workload):
    server = SlotServer(slots=1, service_s=0.05)
    m = measure(server, workload, mode="open", concurrency=1, rate=200, calls=10, warmup=0, arrival="fixed",
                max_queue_s=0.01)
    assert m.errors > 0 and m.calls + m.errors == 10
    assert "dropped" in m.first_error


def test_arrival_schedules():
    assert arrival_offsets(100, calls=4, arrival="fixed") == [0, 10_000_000, 20_000_000, 30_000_000]
    assert len(arrival_offsets(100, duration_s=0.5, arrival="fixed")) == 50
    poisson = arrival_offsets(1000, calls=4000, seed=1)
    assert poisson == arrival_offsets(1000, calls=4000, seed=1)
    assert poisson != arrival_offsets(1000, calls=4000, seed=2)
    mean_gap_ms = poisson[-1] / (len(poisson) - 1) / 1e6
    assert 0.9 < mean_gap_ms < 1.1
    assert len(arrival_offsets(1000, calls=10, duration_s=100)) == 10  # whichever bound comes first


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "sideways", "calls": 1}, "unknown mode"),
    ({"concurrency": 0, "calls": 1}, "concurrency must be a positive integer"),
    ({}, "needs a bound"),
    ({"duration_s": -1}, "duration must be a positive"),
    ({"calls": 0}, "calls must be a positive integer"),
    ({"warmup": -1, "calls": 1}, "warm-up"),
    ({"mode": "open", "calls": 1}, "needs a rate"),
    ({"mode": "open", "rate": 0, "calls": 1}, "rate must be a positive"),
    ({"mode": "closed", "rate": 5, "calls": 1}, "rate is for open-loop"),
    ({"mode": "open", "rate": 5, "calls": 1, "arrival": "bursty"}, "unknown arrival"),
])
def test_bad_loop_settings_are_config_errors(workload, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        measure(Counting(), workload, **kwargs)


# --- statistics wiring ---------------------------------------------------------------------------

def test_row_statistics_from_known_timings():
    ids = torch.tensor([[7, 8, 9, 0], [7, 8, 0, 0]])
    mask = (ids != 0).long()
    data = Workload(2, 4, (Batch(ids, mask, torch.zeros_like(ids)),), source="hand-made")
    ms = 1_000_000
    # 4 calls of 1..4 ms, three completing in the first second of a 2 s run, one in the second.
    m = Measurement(mode="closed", concurrency=1, rate=None, latencies_ns=[ms, 2 * ms, 3 * ms, 4 * ms],
                    completions_ns=[200 * ms, 400 * ms, 600 * ms, 1500 * ms], batch_indices=[0, 0, 0, 0],
                    errors=1, first_error="x", start_ns=0, end_ns=2000 * ms, cpu_percent=150.0, rss_mb=321.0)
    t = Target(name="cpu-eager", precision="fp32", cores=2, run=hidden_of, artifact_sha256="ab" * 32, label="eager")
    row = to_row(m, t, data, model="tiny", accuracy_cosine_min=0.99, harness_overhead=0.001)
    assert isinstance(row, BenchRow)
    assert row.latency_ms["p50"] == pytest.approx(2.5) and row.latency_ms["max"] == pytest.approx(4.0)
    assert row.latency_ms["p99"] == pytest.approx(3.97)  # numpy's linear rule: 3 + 0.99 * 3 - 2
    assert row.throughput_avg == pytest.approx(8 / 2.0)  # 4 calls x batch 2 in 2 s
    assert row.throughput_peak == pytest.approx(6.0)  # 3 calls in the first 1 s window, x batch 2
    assert row.tokens_per_s == pytest.approx(4 * 5 / 2.0)  # 5 real tokens per batch
    assert row.padding_efficiency == pytest.approx(5 / 8)
    assert (row.calls, row.errors, row.cores, row.mode, row.rate) == (4, 1, 2, "closed", None)
    assert (row.cpu_percent, row.mem_mb) == (150.0, 321.0)
    assert (row.accuracy_cosine_min, row.harness_overhead_ms) == (0.99, 0.001)
    assert row.artifact_sha256 == "ab" * 32
    assert row.label.startswith("eager; closed loop, 1 worker")


def test_open_loop_row_records_its_rate(workload):
    m = measure(Counting(), workload, mode="open", rate=500, calls=10, warmup=0, concurrency=2)
    row = to_row(m, target(Counting()), workload, model="m", arrival="poisson")
    assert (row.mode, row.rate, row.concurrency) == ("open", 500.0, 2)
    assert "open loop, poisson 500 req/s, 2 workers" in row.label


def test_harness_overhead_is_measured(workload):
    assert harness_overhead_ms(workload, "closed", calls=200) > 0
    assert harness_overhead_ms(workload, "open", calls=20) > 0


def test_accuracy_against_the_fp32_reference(tiny_model, workload):
    reference = make_reference(tiny_model, workload.batches[0])
    assert accuracy(tiny_model, reference) == pytest.approx(1.0, abs=1e-6)
    generator = torch.Generator().manual_seed(0)

    def noisy(*inputs):
        hidden = tiny_model(*inputs)
        return hidden + torch.randn(hidden.shape, generator=generator)

    assert accuracy(noisy, reference) < 0.99
    with pytest.raises(ShapeError, match="expected hidden states"):
        accuracy(lambda *inputs: torch.zeros(3), reference)


# --- the sweep -----------------------------------------------------------------------------------

def test_sweep_points_and_checks():
    sweep = Sweep(batch_sizes="8,1", seq_lens=[32], concurrency=(1, 2), rates="50", calls=5)
    assert sweep.batch_sizes == (1, 8)
    points = [(p.batch_size, p.mode, p.concurrency, p.rate) for p in sweep.points()]
    assert points == [(1, "closed", 1, None), (1, "closed", 2, None), (8, "closed", 1, None),
                      (8, "closed", 2, None), (1, "open", 2, 50.0), (8, "open", 2, 50.0)]


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_sizes": []}, "no batch sizes"),
    ({"seq_lens": ""}, "no sequence lengths"),
    ({"concurrency": ()}, "no concurrency"),
    ({"batch_sizes": [0, 1]}, "batch sizes must be positive"),
    ({"seq_lens": [-16]}, "sequence lengths must be positive"),
    ({"batch_sizes": "1,x"}, "batch sizes must be a comma-separated list of integers"),
    ({"rates": [10, -1]}, "rates must be positive"),
    ({"rates": "fast"}, "rates must be numbers"),
    ({"duration_s": None, "calls": None}, "needs a bound"),
    ({"duration_s": 0}, "duration must be a positive"),
    ({"warmup": -2}, "warm-up"),
    ({"arrival": "bursty"}, "unknown arrival"),
    ({"open_workers": 0}, "open-loop workers"),
])
def test_bad_sweeps_are_config_errors(kwargs, message):
    settings = {"batch_sizes": [1], "seq_lens": [16], "duration_s": 1.0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        Sweep(**settings)


def test_run_sweep_rows_progress_and_lazy_targets(tiny_config, tiny_model):
    built = []

    def build():
        built.append(True)
        return target(tiny_model, name="lazy")

    messages: list[str] = []
    sweep = Sweep(batch_sizes=[1, 2], seq_lens=[16], concurrency=[1, 2], rates=[200], calls=6, warmup=1)
    workload_for = lambda b, s: synthetic_workload(tiny_config, b, s, pool=2)  # noqa: E731
    reference = make_reference(tiny_model, workload_for(4, 16).batches[0])
    rows, slo = run_sweep([target(tiny_model, name="eager"), LazyTarget("lazy", build)], sweep, workload_for,
                          model="tiny", reference=reference, progress=messages.append)
    assert slo == []
    assert len(built) == 1
    assert len(rows) == 2 * 6
    assert [r.backend for r in rows] == ["eager"] * 6 + ["lazy"] * 6
    assert {(r.batch_size, r.mode, r.concurrency) for r in rows} == {
        (1, "closed", 1), (1, "closed", 2), (2, "closed", 1), (2, "closed", 2), (1, "open", 2), (2, "open", 2)}
    assert all(r.calls == 6 and r.errors == 0 for r in rows)
    assert all(r.accuracy_cosine_min == pytest.approx(1.0, abs=1e-6) for r in rows)
    assert all(r.harness_overhead_ms > 0 for r in rows)
    starts = [m for m in messages if m.startswith("[") and ("left" in m or "unknown" in m)]
    assert starts[0].startswith("[1/12] eager b1 s16 c1: ") and starts[0].endswith(" + 1 target build")
    assert starts[-1].startswith("[12/12] lazy b2 s16 200 req/s: ") and starts[-1].endswith(" left")
    assert any(m.startswith("preparing lazy") for m in messages)
    assert messages.index(next(m for m in messages if m.startswith("preparing lazy"))) > \
        messages.index(starts[5])  # built only when its turn came


def test_run_sweep_needs_targets(workload):
    with pytest.raises(ConfigError, match="no targets"):
        run_sweep([], Sweep(batch_sizes=[1], seq_lens=[16], calls=1), lambda b, s: workload, model="m")


def test_eta_from_steps_done():
    eta = Eta(total=4, guess_per_step_s=2.0)
    assert eta.left() == "8.0 s left"
    eta.step_done(30.0)
    assert eta.left() == "1 min 30 s left"
    assert eta.left(pending_builds=2) == "1 min 30 s left + 2 target builds"
    assert Eta(total=1, guess_per_step_s=None).left() == "time left unknown"
    assert format_seconds(7300) == "2 h 01 min"


# --- SLO capacity search -------------------------------------------------------------------------

def test_capacity_by_concurrency_finds_the_knee(workload):
    # 3 slots of 20 ms: up to 3 workers p99 ~20 ms and throughput ~3/20ms; a 4th worker queues
    # (p99 ~40 ms). With a 32 ms SLO the answer is concurrency 3: 1, 2, 4 (over), then bisect to 3.
    server = SlotServer(slots=3, service_s=0.02)
    messages: list[str] = []
    entry = find_capacity(target(server, name="slots"), 32.0, workload, calls=24, warmup=1, progress=messages.append)
    assert entry["met"] and entry["search"] == "concurrency"
    assert entry["at_concurrency"] == 3
    assert [p["concurrency"] for p in entry["probes"]] == [1, 2, 4, 3]
    assert 0.4 * 300 < entry["best_throughput"] < 1.2 * 300  # 3 calls x batch 2 per 20 ms = 300 inf/s
    assert entry["p99_ms"] <= 32.0
    assert {"backend", "slo_p99_ms", "best_throughput", "at_concurrency", "p99_ms"} <= entry.keys()
    assert entry["backend"] == "slots" and entry["batch_size"] == 2 and entry["seq_len"] == 16
    assert len(messages) == 4 and "over" in messages[2]


def test_capacity_by_rate_finds_the_service_rate(workload):
    # Fixed arrivals to 3 slots of 20 ms: no queue below 150 requests/s, a growing one above.
    server = SlotServer(slots=3, service_s=0.02)
    entry = find_capacity(target(server), 32.0, workload, search="rate", start_rate=40.0, open_workers=6,
                          duration_s=0.4, warmup=1, arrival="fixed")
    assert entry["met"] and entry["search"] == "rate"
    assert 0.5 * 150 < entry["rate"] < 1.1 * 150
    assert entry["at_concurrency"] == 6
    assert entry["best_throughput"] == pytest.approx(entry["rate"] * 2, rel=0.3)  # batch 2 per request


def test_capacity_when_nothing_meets_the_slo(workload):
    entry = find_capacity(target(SlotServer(slots=1, service_s=0.01)), 1.0, workload, calls=3, warmup=0)
    assert not entry["met"]
    assert entry["best_throughput"] == 0.0 and entry["at_concurrency"] == 1
    assert entry["p99_ms"] > 1.0 and entry["stopped"] == "SLO exceeded"


def test_capacity_stops_at_max_concurrency(workload):
    entry = find_capacity(target(Counting()), 10_000.0, workload, calls=4, warmup=0, max_concurrency=3)
    assert [p["concurrency"] for p in entry["probes"]][-1] <= 3
    assert entry["met"]


@pytest.mark.parametrize("kwargs, message", [
    ({"slo_p99_ms": 0}, "SLO must be a positive"),
    ({"search": "latency"}, "unknown capacity search"),
    ({"max_concurrency": 0}, "max concurrency"),
])
def test_bad_capacity_settings(workload, kwargs, message):
    settings = {"slo_p99_ms": 10.0, "calls": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        find_capacity(target(Counting()), workload=workload, **settings)

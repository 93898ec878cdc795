"""The timed loop on synthetic callables: what is counted, the open loop's queueing, the thread rule.
No speed asserted: where the wall clock matters, the margins are several times the expected values."""

from __future__ import annotations

import threading

import pytest
import torch

from neuron_encoder.bench import loop
from neuron_encoder.bench.loop import Measurement, arrival_offsets, harness_overhead_ms, measure
from neuron_encoder.bench.workload import Workload, synthetic_workload
from neuron_encoder.errors import ConfigError
from neuron_encoder.threads import plan_threads

from .bench_doubles import Counting, SlotServer


@pytest.fixture(scope="module")
def workload(tiny_config) -> Workload:
    return synthetic_workload(tiny_config, batch_size=2, seq_len=16, pool=4)


def test_closed_loop_counts_exactly_the_measured_calls(workload):
    run = Counting()
    m = measure(run, workload, concurrency=3, calls=30, warmup=2)
    assert m.calls == 30 and len(m.completions_ns) == 30 and m.errors == 0
    assert next(run.calls) == 30 + 3 * 2 + 1  # warm-up ran on every worker and is not counted
    assert all(m.start_ns <= t <= m.end_ns for t in m.completions_ns)
    assert all(latency > 0 for latency in m.latencies_ns)
    assert set(m.batch_indices) == set(range(len(workload.batches)))  # the whole pool is used


def test_closed_loop_bounded_by_duration_starts_no_call_after_the_deadline(workload):
    m = measure(Counting(), workload, concurrency=2, duration_s=0.05, warmup=0)
    assert m.calls > 0 and m.duration_s >= 0.05
    starts = [done - latency for done, latency in zip(m.completions_ns, m.latencies_ns)]
    assert max(starts) < m.start_ns + 50_000_000  # every measured call began before the deadline


def test_errors_are_counted_not_fatal(workload):
    m = measure(Counting(fail_every=3), workload, concurrency=1, calls=30, warmup=0)
    assert (m.calls, m.errors) == (20, 10)
    assert m.first_error == "RuntimeError: synthetic failure 3"


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
    ({"duration_s": -1}, r"duration \(seconds\) must be a positive"),
    ({"calls": 0}, "calls must be a positive integer"),
    ({"warmup": -1, "calls": 1}, "warm-up"),
    ({"mode": "open", "calls": 1}, "needs a rate"),
    ({"mode": "open", "rate": 0, "calls": 1}, "rate .* must be a positive"),
    ({"mode": "closed", "rate": 5, "calls": 1}, "rate is for open-loop"),
    ({"mode": "open", "rate": 5, "calls": 1, "arrival": "bursty"}, "unknown arrival"),
])
def test_bad_loop_settings_are_config_errors(workload, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        measure(Counting(), workload, **kwargs)


def test_harness_overhead_is_wall_time_per_no_op_call(workload, monkeypatch):
    """The closed-loop figure is the no-op run's wall time divided by its calls, in ms."""
    fake = Measurement(mode="closed", concurrency=1, rate=None, latencies_ns=[1] * 4, completions_ns=[1] * 4,
                       batch_indices=[0] * 4, errors=0, first_error=None, start_ns=0, end_ns=8_000_000,
                       cpu_percent=0.0, rss_mb=0.0)
    monkeypatch.setattr(loop, "measure", lambda *args, **kwargs: fake)
    assert harness_overhead_ms(workload, "closed") == pytest.approx(2.0)  # 8 ms / 4 calls
    fake.latencies_ns = [1_000_000, 3_000_000, 2_000_000, 2_000_000]
    assert harness_overhead_ms(workload, "open") == pytest.approx(2.0)  # mean send-to-completion


def test_harness_overhead_runs_for_real(workload):
    assert harness_overhead_ms(workload, "closed", calls=200) > 0
    assert harness_overhead_ms(workload, "open", calls=20) > 0


# --- the thread rule (neuron_encoder/threads.py) ---------------------------------------------------

def test_one_worker_runs_on_the_calling_thread_where_the_model_was_loaded(workload):
    """Concurrency 1 makes no thread: the timed calls run where the caller loaded and warmed the model."""
    seen: set[int] = set()

    def run(*inputs):
        seen.add(threading.get_ident())
        return torch.zeros(1)

    m = measure(run, workload, concurrency=1, calls=10, warmup=2, threads=plan_threads(1))
    assert seen == {threading.get_ident()} and m.worker_threads == (threading.get_ident(),)


def test_workers_split_the_cpu_threads_and_restore_them_after(workload):
    before = torch.get_num_threads()
    inside: dict[int, int] = {}

    def run(*inputs):
        inside[threading.get_ident()] = torch.get_num_threads()
        return torch.zeros(1)

    plan = plan_threads(2, budget=2)
    m = measure(run, workload, concurrency=2, calls=20, warmup=1, threads=plan)
    assert set(inside) == set(m.worker_threads) and threading.get_ident() not in inside
    assert set(inside.values()) == {1} and not plan.oversubscribed  # 2 workers x 1 thread = 2 cores
    assert torch.get_num_threads() == before


def test_off_the_cpu_the_thread_count_is_left_alone(workload):
    inside = []
    measure(lambda *inputs: inside.append(torch.get_num_threads()), workload, concurrency=2, calls=4, warmup=0)
    assert set(inside) == {torch.get_num_threads()}

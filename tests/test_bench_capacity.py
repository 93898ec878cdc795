"""The SLO capacity search on a queueing model whose latency grows with load: arithmetic, not sleeps, so
every figure below is exact and no test depends on this machine's timing."""

from __future__ import annotations

import pytest

from neuron_encoder.bench.capacity import find_capacity
from neuron_encoder.bench.workload import Workload, synthetic_workload
from neuron_encoder.errors import ConfigError

from .bench_doubles import Counting, QueueModel, engine


@pytest.fixture(scope="module")
def workload(tiny_config) -> Workload:
    return synthetic_workload(tiny_config, batch_size=2, seq_len=16, pool=4)


def test_capacity_by_concurrency_finds_the_knee(workload):
    # 3 slots of 20 ms: up to 3 workers p99 ~20 ms and throughput ~3/20ms; a 4th worker queues
    # (p99 ~40 ms). With a 32 ms SLO the answer is concurrency 3: 1, 2, 4 (over), then bisect to 3.
    server = QueueModel(slots=3, service_s=0.02)
    messages: list[str] = []
    entry = find_capacity(engine(server, name="slots"), 32.0, workload, calls=24, warmup=1, progress=messages.append,
                          measure_fn=server.measure)
    assert entry["met"] and entry["search"] == "concurrency" and entry["stopped"] == "SLO exceeded"
    assert entry["at_concurrency"] == 3
    assert [p["concurrency"] for p in entry["probes"]] == [1, 2, 4, 3]
    assert entry["best_throughput"] == pytest.approx(300)  # 3 calls x batch 2 per 20 ms = 300 inf/s
    assert entry["p99_ms"] == pytest.approx(20.0)
    assert {"engine", "slo_p99_ms", "best_throughput", "at_concurrency", "p99_ms"} <= entry.keys()
    assert entry["engine"] == "slots" and entry["batch_size"] == 2 and entry["seq_len"] == 16
    assert len(messages) == 4 and "over" in messages[2]


def test_capacity_by_rate_finds_the_service_rate(workload):
    # Fixed arrivals to 3 slots of 20 ms: no queue below 150 requests/s, a growing one above.
    server = QueueModel(slots=3, service_s=0.02)
    entry = find_capacity(engine(server), 32.0, workload, search="rate", start_rate=40.0, open_workers=6,
                          duration_s=0.4, warmup=1, arrival="fixed", measure_fn=server.measure)
    assert entry["met"] and entry["search"] == "rate" and entry["stopped"] in ("SLO bound found", "probe limit")
    assert 0.9 * 150 < entry["rate"] < 1.1 * 150  # within the search's 10% tolerance of the true bound
    assert entry["at_concurrency"] == 6
    assert entry["best_throughput"] == pytest.approx(min(entry["rate"], 150) * 2)  # batch 2 per request


def test_capacity_when_nothing_meets_the_slo(workload):
    server = QueueModel(slots=1, service_s=0.01)
    entry = find_capacity(engine(server), 1.0, workload, calls=3, warmup=0, measure_fn=server.measure)
    assert not entry["met"]
    assert entry["best_throughput"] == 0.0 and entry["at_concurrency"] == 1
    assert entry["p99_ms"] == pytest.approx(10.0) and entry["stopped"] == "SLO exceeded"


def test_capacity_stops_at_max_concurrency(workload):
    entry = find_capacity(engine(Counting()), 10_000.0, workload, calls=4, warmup=0, max_concurrency=3)
    concurrencies = [p["concurrency"] for p in entry["probes"]]
    assert max(concurrencies) <= 3 and entry["met"]
    assert entry["stopped"] in ("max concurrency", "throughput stopped growing")


@pytest.mark.parametrize("kwargs, message", [
    ({"slo_p99_ms": 0}, r"SLO \(ms\) must be a positive"),
    ({"search": "latency"}, "unknown capacity search"),
    ({"max_concurrency": 0}, "max concurrency"),
])
def test_bad_capacity_settings(workload, kwargs, message):
    settings = {"slo_p99_ms": 10.0, "calls": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        find_capacity(engine(Counting()), workload=workload, **settings)

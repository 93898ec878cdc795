"""The sweep: rows from measurements, progress and ETA, lazy engines, failures reported per engine."""

from __future__ import annotations

import pytest
import torch

from neuron_encoder.bench.accuracy import make_reference
from neuron_encoder.bench.engines import Engine, LazyEngine
from neuron_encoder.bench.loop import Measurement, measure
from neuron_encoder.bench.results import BenchRow
from neuron_encoder.bench.sweep import Eta, Sweep, format_seconds, run_sweep, to_row
from neuron_encoder.bench.workload import Workload, synthetic_workload
from neuron_encoder.errors import BenchmarkFailed, ConfigError, NeuronEncoderError
from neuron_encoder.text import Batch

from .bench_doubles import Counting, engine, hidden_of


@pytest.fixture(scope="module")
def workload(tiny_config) -> Workload:
    return synthetic_workload(tiny_config, batch_size=2, seq_len=16, pool=4)


def test_errors_are_counted_in_the_row(workload):
    m = measure(Counting(fail_every=3), workload, concurrency=1, calls=30, warmup=0)
    row = to_row(m, engine(Counting()), workload, model="m")
    assert (row.calls, row.errors) == (20, 10)


def test_a_configuration_where_every_call_fails_is_an_error(workload):
    def broken(*inputs):
        raise ValueError("no device")

    m = measure(broken, workload, calls=5, warmup=1)
    assert (m.calls, m.errors) == (0, 5)
    with pytest.raises(BenchmarkFailed, match="every call failed .*ValueError: no device") as info:
        to_row(m, engine(broken), workload, model="m")
    assert isinstance(info.value, NeuronEncoderError)


def test_row_statistics_from_known_timings():
    ids = torch.tensor([[7, 8, 9, 0], [7, 8, 0, 0]])
    mask = (ids != 0).long()
    data = Workload(2, 4, (Batch(ids, mask, torch.zeros_like(ids)),), source="hand-made")
    ms = 1_000_000
    # 4 calls of 1..4 ms, three completing in the first second of a 2 s run, one in the second.
    m = Measurement(mode="closed", concurrency=1, rate=None, latencies_ns=[ms, 2 * ms, 3 * ms, 4 * ms],
                    completions_ns=[200 * ms, 400 * ms, 600 * ms, 1500 * ms], batch_indices=[0, 0, 0, 0],
                    errors=1, first_error="x", start_ns=0, end_ns=2000 * ms, cpu_percent=150.0, rss_mb=321.0)
    t = Engine(name="cpu-eager", precision="fp32", device="cpu", cores=2, run=hidden_of, artifact_sha256="ab" * 32,
               label="eager")
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


def test_cpu_rows_record_the_threads_each_worker_had(workload, monkeypatch):
    from neuron_encoder import threads
    monkeypatch.setattr(threads, "cpu_budget", lambda: 2)
    cpu = Engine(name="cpu-eager", precision="fp32", device="cpu", cores=2, run=hidden_of)
    for workers, each, over in ((1, 2, False), (2, 1, False), (4, 1, True)):
        m = measure(hidden_of, workload, concurrency=workers, calls=8, warmup=0, threads=cpu.thread_plan(workers))
        row = to_row(m, cpu, workload, model="m")
        assert (row.threads_per_worker, row.oversubscribed) == (each, over)
        assert f"{workers} x {each} CPU thread" in row.label and (("oversubscribed" in row.label) == over)
    off_cpu = to_row(measure(hidden_of, workload, calls=2, warmup=0), engine(hidden_of), workload, model="m")
    assert (off_cpu.threads_per_worker, off_cpu.oversubscribed) == (None, False)


def test_open_loop_row_records_its_rate(workload):
    m = measure(Counting(), workload, mode="open", rate=500, calls=10, warmup=0, concurrency=2)
    row = to_row(m, engine(Counting()), workload, model="m", arrival="poisson")
    assert (row.mode, row.rate, row.concurrency) == ("open", 500.0, 2)
    assert "open loop, poisson 500 req/s, 2 workers" in row.label


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
    ({"rates": [10, -1]}, r"rate \(requests/s\) must be a positive"),
    ({"rates": "fast"}, "rates must be numbers"),
    ({"duration_s": None, "calls": None}, "needs a bound"),
    ({"duration_s": 0}, r"duration \(seconds\) must be a positive"),
    ({"warmup": -2}, "warm-up"),
    ({"arrival": "bursty"}, "unknown arrival"),
    ({"open_workers": 0}, "open-loop workers"),
])
def test_bad_sweeps_are_config_errors(kwargs, message):
    settings = {"batch_sizes": [1], "seq_lens": [16], "duration_s": 1.0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        Sweep(**settings)


def test_run_sweep_rows_progress_and_lazy_engines(tiny_config, tiny_model):
    built, closed = [], []

    def build():
        built.append(True)
        return Engine(name="lazy", precision="fp32", device="cpu", cores=1, run=tiny_model,
                      close=lambda: closed.append(True))

    messages: list[str] = []
    sweep = Sweep(batch_sizes=[1, 2], seq_lens=[16], concurrency=[1, 2], rates=[200], calls=6, warmup=1)
    workload_for = lambda b, s: synthetic_workload(tiny_config, b, s, pool=2)  # noqa: E731
    reference = make_reference(tiny_model, workload_for(4, 16).batches[0])
    outcome = run_sweep([engine(tiny_model, name="eager"), LazyEngine("lazy", build)], sweep, workload_for,
                        model="tiny", reference=reference, progress=messages.append)
    rows = outcome.rows
    assert outcome.slo == [] and outcome.failures == []
    assert built == [True] and closed == [True]  # built when its turn came, closed after it
    assert len(rows) == 2 * 6
    assert [r.engine for r in rows] == ["eager"] * 6 + ["lazy"] * 6
    assert {(r.batch_size, r.mode, r.concurrency) for r in rows} == {
        (1, "closed", 1), (1, "closed", 2), (2, "closed", 1), (2, "closed", 2), (1, "open", 2), (2, "open", 2)}
    assert all(r.calls == 6 and r.errors == 0 for r in rows)
    assert all(r.accuracy_cosine_min == pytest.approx(1.0, abs=1e-6) for r in rows)
    assert all(r.harness_overhead_ms > 0 for r in rows)
    starts = [m for m in messages if m.startswith("[") and ("left" in m or "unknown" in m)]
    assert starts[0].startswith("[1/12] eager b1 s16 c1: ") and starts[0].endswith(" + 1 engine build")
    assert starts[-1].startswith("[12/12] lazy b2 s16 200 req/s: ") and starts[-1].endswith(" left")
    assert any(m.startswith("preparing lazy") for m in messages)
    assert messages.index(next(m for m in messages if m.startswith("preparing lazy"))) > \
        messages.index(starts[5])  # built only when its turn came


def test_an_engine_with_wrong_outputs_fails_loudly_and_gets_no_rows(tiny_config, tiny_model):
    """The accuracy check is the first call of every engine: a wrong shape fails that engine."""
    messages: list[str] = []
    sweep = Sweep(batch_sizes=[1], seq_lens=[16], concurrency=[1], calls=3, warmup=0)
    workload_for = lambda b, s: synthetic_workload(tiny_config, b, s, pool=2)  # noqa: E731
    reference = make_reference(tiny_model, workload_for(2, 16).batches[0])
    wrong = engine(lambda ids, *rest: torch.zeros(ids.shape[0], 3), name="wrong-shape")
    outcome = run_sweep([wrong, engine(tiny_model, name="good")], sweep, workload_for, model="tiny",
                        reference=reference, progress=messages.append)
    assert [r.engine for r in outcome.rows] == ["good"]
    (failure,) = outcome.failures
    assert failure["engine"] == "wrong-shape" and "expected hidden states" in failure["error"]
    assert any(m.startswith("FAILED wrong-shape: ShapeError") for m in messages)


def test_an_engine_whose_build_fails_is_reported_and_the_rest_run(tiny_config, tiny_model):
    def build():
        raise BenchmarkFailed("the compiler crashed")

    sweep = Sweep(batch_sizes=[1], seq_lens=[16], concurrency=[1], calls=2, warmup=0)
    outcome = run_sweep([LazyEngine("broken", build), engine(tiny_model, name="good")], sweep,
                        lambda b, s: synthetic_workload(tiny_config, b, s, pool=1), model="tiny")
    assert [r.engine for r in outcome.rows] == ["good"]
    assert outcome.failures == [{"engine": "broken", "error": "BenchmarkFailed: the compiler crashed"}]


def test_run_sweep_needs_engines(workload):
    with pytest.raises(ConfigError, match="no engines"):
        run_sweep([], Sweep(batch_sizes=[1], seq_lens=[16], calls=1), lambda b, s: workload, model="m")


def test_eta_from_steps_done():
    eta = Eta(total=4, guess_per_step_s=2.0)
    assert eta.left() == "8.0 s left"
    eta.step_done(30.0)
    assert eta.left() == "1 min 30 s left"
    assert eta.left(pending_builds=2) == "1 min 30 s left + 2 engine builds"
    eta.skip(2)
    assert eta.left() == "30.0 s left"
    assert Eta(total=1, guess_per_step_s=None).left() == "time left unknown"
    assert format_seconds(7300) == "2 h 01 min"

"""The server's Prometheus metrics: names, labels, and the busy fraction over a sliding window."""

from __future__ import annotations

from neuron_encoder.serve.metrics import Metrics, ReplicaActivity


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_busy_fraction_counts_the_last_window_only():
    clock = Clock()
    activity = ReplicaActivity(2, window_s=10, clock=clock)
    clock.now = 110  # ten seconds up
    activity.begin(0)
    clock.now = 112
    assert activity.end(0) == 2
    assert activity.busy_fraction(0) == 0.2 and activity.busy_fraction(1) == 0.0
    activity.begin(1)
    clock.now = 117
    assert activity.busy_fraction(1) == 0.5  # a batch still running counts up to now
    clock.now = 130
    assert activity.busy_fraction(0) == 0.0  # its batch left the window


def test_every_listed_metric_is_exposed():
    metrics = Metrics(2, queue_depth=lambda: 3, in_flight=lambda: 5)
    metrics.requests.labels("/embed", "200").inc()
    metrics.rejected.labels("queue_full").inc()
    metrics.batch_done(1, rows=3, tokens=30, bucket=(4, 16), computed=64, seconds=0.01, failed=False)
    metrics.batch_done(0, rows=2, tokens=9, bucket=(4, 16), computed=64, seconds=0.01, failed=True)
    text = metrics.render().decode()
    for line in ('neuron_encoder_requests_total{route="/embed",status="200"} 1.0',
                 'neuron_encoder_rejected_total{reason="queue_full"} 1.0',
                 'neuron_encoder_bucket_hits_total{batch="4",seq="16"} 1.0',
                 "neuron_encoder_queue_depth 3.0", "neuron_encoder_in_flight_inputs 5.0",
                 "neuron_encoder_batch_size_sum 3.0", "neuron_encoder_batch_tokens_sum 30.0",
                 "neuron_encoder_padding_efficiency 0.46875", "neuron_encoder_batch_failures_total 1.0",
                 "neuron_encoder_inference_duration_seconds_count 2.0"):
        assert line in text, line
    for name in ("request_duration_seconds", "tokenization_duration_seconds", "queue_duration_seconds",
                 "request_input_length", "replica_busy_fraction", "replica_busy_seconds_total"):
        assert f"neuron_encoder_{name}" in text, name
    assert 'neuron_encoder_replica_busy_fraction{replica="1"}' in text
    assert "_created" not in text


def test_the_server_leaves_prometheus_client_as_it_found_it():
    """No *_created series in /metrics, without switching them off for every other registry in the process."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest
    Metrics(1, lambda: 0, lambda: 0).render()
    registry = CollectorRegistry()
    Counter("someone_elses", "a counter of another library", registry=registry).inc()
    assert b"someone_elses_created" in generate_latest(registry)

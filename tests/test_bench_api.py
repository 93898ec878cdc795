"""run_bench end to end on the CPU (tiny sizes, short runs), its result file and a report from it;
bad input refused before anything is compiled or run."""

from __future__ import annotations

import json

import pytest

from neuron_encoder import hardware
from neuron_encoder.bench import peers
from neuron_encoder.bench.api import run_bench
from neuron_encoder.bench.report import format_summary_table, write_report
from neuron_encoder.bench.results import read_result
from neuron_encoder.errors import BackendUnavailable, ConfigError, ShapeError

from .conftest import cpu_precision


@pytest.fixture(autouse=True)
def offline_cpu_host(monkeypatch):
    monkeypatch.setenv("NEURON_ENCODER_NO_IMDS", "1")  # no metadata probe leaves this machine
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    monkeypatch.setattr(hardware, "has_neuron_devices", lambda: False)
    monkeypatch.setattr(peers, "missing", lambda runtime: "not installed")  # no ONNX Runtime or OpenVINO


def test_tiny_cpu_run_end_to_end(tmp_path):
    """The cpu family: eager and the fp32 artifact, and the bf16 one where this run's policy picks bf16."""
    engines = ("cpu-eager", "cpu-artifact-fp32") + (("cpu-artifact-bf16",) if cpu_precision() == "bf16" else ())
    messages: list[str] = []
    result, path = run_bench("random:tiny", engines=["cpu"], batch_sizes=[1, 2], seq_lens=[16, 32], concurrency=[1],
                             duration_s=None, calls=16, warmup=1, out_dir=tmp_path / "results",
                             artifacts_dir=tmp_path / "artifacts", command="neuron-encoder bench (test)",
                             progress=messages.append)
    assert path.parent == tmp_path / "results" and path.suffix == ".json" and path.with_suffix(".csv").exists()
    again = read_result(path)
    assert again.to_dict() == result.to_dict()
    assert [(r.engine, r.batch_size, r.seq_len) for r in again.rows] == [
        (engine, b, s) for engine in engines for s in (16, 32) for b in (1, 2)]
    for row in again.rows:
        assert row.calls == 16 and row.errors == 0 and row.model == "random:tiny"
        assert 0 < row.padding_efficiency < 1  # log-normal lengths, not full rows
        assert row.accuracy_cosine_min > (0.999 if row.engine.endswith("bf16") else 0.9999)
        assert row.harness_overhead_ms > 0 and row.mem_mb > 0
        assert row.tokens_per_s > 0 and row.throughput_peak > 0 and row.latency_ms["p50"] > 0
    eager, compiled = again.rows[0], again.rows[-1]
    assert eager.artifact_sha256 is None and len(compiled.artifact_sha256) == 64
    env = again.environment
    assert env["command"] == "neuron-encoder bench (test)" and env["instance_type"] is None
    assert env["artifacts"][compiled.engine] == compiled.artifact_sha256
    # the one-artifact field holds a hash only when the run had one artifact
    assert env["artifact_manifest_sha256"] == (compiled.artifact_sha256 if len(engines) == 2 else None)
    last = len(engines) * 4
    assert any(m.startswith(f"[{last}/{last}] {engines[-1]} b2 s32 c1") for m in messages)

    report = write_report([path], tmp_path / "report")
    text = report.read_text()
    assert "cpu-artifact-fp32" in text and "cpu-eager" in text
    assert (tmp_path / "report" / "latency_vs_throughput.png").stat().st_size > 0
    assert "cpu-eager" in format_summary_table(again.rows)


def test_minilm_on_real_text_with_an_slo(tmp_path, minilm_resolved):
    result, path = run_bench(minilm_resolved, engines="cpu-eager", batch_sizes=[1, 2], seq_lens=[16], concurrency=[1],
                             duration_s=0.2, warmup=1, out_dir=tmp_path, slo_p99_ms=10_000.0)
    data = json.loads(path.read_text())
    assert data["schema"] == "neuron-encoder/bench-result" and data["command"].startswith("run_bench(")
    assert {r["model"] for r in data["rows"]} == {"minilm"}
    (entry,) = result.slo
    assert entry["engine"] == "cpu-eager" and entry["met"] and entry["best_throughput"] > 0
    assert entry["batch_size"] in (1, 2) and entry["seq_len"] == 16
    assert len(entry["other_batch_sizes"]) == 1
    assert "## Best throughput within a p99 latency SLO" in write_report([path], tmp_path / "report").read_text()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"engines": ["cpu", "tpu"]}, ConfigError, "unknown engine 'tpu'"),
    ({"engines": []}, ConfigError, "no engines"),
    ({"engines": ["neuron"]}, BackendUnavailable, "pip install neuronx-cc==.* torch-neuronx=="),
    ({"batch_sizes": []}, ConfigError, "no batch sizes"),
    ({"seq_lens": [0]}, ConfigError, "sequence lengths must be positive"),
    ({"concurrency": [-1]}, ConfigError, "concurrency must be positive"),
    ({"rates": [0]}, ConfigError, r"rate \(requests/s\) must be a positive"),
    ({"duration_s": None, "calls": None}, ConfigError, "needs a bound"),
    ({"slo_p99_ms": -5}, ConfigError, r"SLO \(ms\) must be a positive"),
    ({"slo_search": "magic"}, ConfigError, "unknown capacity search"),
    ({"seq_lens": [256]}, ShapeError, "sequence length 256 is longer than the model's 128 positions"),
])
def test_bad_input_is_refused_before_anything_runs(monkeypatch, tmp_path, kwargs, error, message):
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: "torch_neuronx is not installed")
    settings = {"engines": ["cpu-eager"], "batch_sizes": [1], "seq_lens": [16], "duration_s": 0.1,
                "out_dir": tmp_path, **kwargs}
    with pytest.raises(error, match=message):
        run_bench("random:tiny", **settings)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_engine_is_reported_the_others_are_kept(tmp_path, monkeypatch):
    """An engine whose accuracy check fails gets no rows; the result is written with the failure, and
    run_bench then raises, so the CLI exits non-zero."""
    from neuron_encoder.bench import engines
    from neuron_encoder.errors import BenchmarkFailed

    real = engines.eager_engine

    def broken(model, kind="cpu-eager"):
        engine = real(model, kind)
        return engines.Engine(**{**engine.__dict__, "run": lambda ids, *rest: ids.float()})  # (B, T): no hidden
    monkeypatch.setattr(engines, "eager_engine", broken)
    with pytest.raises(BenchmarkFailed, match="1 engine.* failed .*cpu-eager: ShapeError"):
        run_bench("random:tiny", engines=["cpu-eager", "cpu-artifact-fp32"], batch_sizes=[1], seq_lens=[16],
                  concurrency=[1], calls=3, warmup=0, out_dir=tmp_path / "results",
                  artifacts_dir=tmp_path / "artifacts", progress=None)
    (path,) = (tmp_path / "results").glob("*.json")
    result = read_result(path)
    assert [r.engine for r in result.rows] == ["cpu-artifact-fp32"]
    assert result.failures[0]["engine"] == "cpu-eager"
    assert "## Engines that failed (no rows)" in write_report([path], tmp_path / "report").read_text()


def test_a_reranker_is_timed_in_pairs_and_scored_by_its_logits(tmp_path):
    """A reranker's rows: (query, text) pairs, its task beside the model, accuracy as logits and top-1."""
    from neuron_encoder.models import load_model
    from tests.families import build_classifier, build_tokenizer
    size = build_tokenizer("unigram", tmp_path / "reranker")
    build_classifier("xlm-roberta", tmp_path / "reranker", num_labels=1, vocab_size=size)
    messages: list[str] = []
    result, path = run_bench(load_model(tmp_path / "reranker"), engines=["cpu-eager", "cpu-artifact-fp32"],
                             batch_sizes=[4], seq_lens=[32], concurrency=[1], duration_s=None, calls=4, warmup=1,
                             out_dir=tmp_path / "results", artifacts_dir=tmp_path / "artifacts",
                             progress=messages.append)
    for row in read_result(path).rows:
        assert row.task == "reranker" and row.accuracy_cosine_min is None
        assert row.accuracy_logit_max_abs < 1e-4 and row.accuracy_top1 == 1.0
    assert any("top-1 agreement 100%" in m for m in messages)
    text = write_report([path], tmp_path / "report").read_text()
    assert f"## Results: {result.rows[0].model} (reranker)" in text and "top-1 100%" in text
    with pytest.raises(ConfigError, match="a reranker is timed on its scoring route: --endpoint-kind tei"):
        run_bench(load_model(tmp_path / "reranker"), engines=[], endpoints=["http://127.0.0.1:9"], seq_lens=[32],
                  out_dir=tmp_path / "results")

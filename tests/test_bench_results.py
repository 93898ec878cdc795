"""The result file: round trip through JSON and CSV, atomic writes, and clear errors on bad files."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from neuron_encoder import files
from neuron_encoder.bench.results import (
    SCHEMA,
    VERSION,
    BenchResult,
    BenchRow,
    ResultFileError,
    csv_columns,
    read_result,
    write_result,
)
from neuron_encoder.errors import InputFileError, NeuronEncoderError

FIXTURES = Path(__file__).parent / "fixtures" / "results"


def make_row(**overrides) -> BenchRow:
    fields = dict(
        engine="neuron",
        label="2 cores x 2 threads",
        model="bert-base-uncased",
        precision="bf16-matmult",
        batch_size=8,
        seq_len=128,
        concurrency=4,
        mode="closed",
        cores=2,
        calls=1000,
        errors=0,
        duration_s=30.0,
        latency_ms={"p50": 6.0, "p90": 6.1, "p95": 6.2, "p99": 6.4, "max": 9.0, "mean": 6.05, "min": 5.8},
        throughput_avg=2600.0,
        throughput_peak=2700.0,
        tokens_per_s=2600.0 * 128 * 0.75,
        padding_efficiency=0.75,
        cpu_percent=150.0,
        mem_mb=1800.0,
        accuracy_cosine_min=0.9985,
        harness_overhead_ms=0.01,
        artifact_sha256="ab" * 32,
    )
    fields.update(overrides)
    return BenchRow(**fields)


def make_result(**overrides) -> BenchResult:
    fields = dict(
        command="neuron-encoder bench --engines neuron",
        environment={"instance_type": "inf2.xlarge", "hostname": "test-host"},
        rows=[make_row(), make_row(batch_size=1, mode="open", rate=500.0, label="open loop")],
        created="2026-11-30T12:00:00Z",
    )
    fields.update(overrides)
    return BenchResult(**fields)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_round_trip_keeps_every_field(tmp_path):
    result = make_result(slo=[{"engine": "neuron", "slo_p99_ms": 10.0, "best_throughput": 2600.0,
                               "at_concurrency": 4, "p99_ms": 6.4}])
    json_path, csv_path = write_result(result, tmp_path / "run.json")
    assert json_path == tmp_path / "run.json"
    assert csv_path == tmp_path / "run.csv"
    again = read_result(json_path)
    assert again == result
    assert again.rows[1].rate == 500.0


def test_json_document_starts_with_schema_and_version(tmp_path):
    write_result(make_result(), tmp_path / "run.json")
    data = json.loads((tmp_path / "run.json").read_text())
    assert list(data)[:2] == ["schema", "version"]
    assert data["schema"] == SCHEMA == "neuron-encoder/bench-result"
    assert data["version"] == VERSION == 2
    assert data["rows"][0]["latency_ms"]["p99"] == 6.4
    assert data["slo"] == []


def test_created_defaults_to_utc_now():
    created = BenchResult(command="x", environment={}, rows=[]).created
    assert created.endswith("Z") and created[:2] == "20" and "T" in created


def test_csv_has_one_line_per_row_with_flattened_latency(tmp_path):
    result = make_result()
    _, csv_path = write_result(result, tmp_path / "run.json")
    with csv_path.open(newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == len(result.rows)
    assert "latency_ms" not in lines[0]
    for line, row in zip(lines, result.rows):
        for key in ("p50", "p90", "p95", "p99", "max", "mean", "min"):
            assert float(line[f"latency_{key}_ms"]) == row.latency_ms[key]
        assert line["engine"] == row.engine
        assert int(line["batch_size"]) == row.batch_size
    assert lines[0]["rate"] == ""
    assert float(lines[1]["rate"]) == 500.0
    assert csv_columns().index("latency_p50_ms") == csv_columns().index("duration_s") + 1


def test_write_replaces_the_old_file_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "out" / "run.json"
    write_result(make_result(command="first"), path)
    write_result(make_result(command="second"), path)
    assert read_result(path).command == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.csv", "run.json"]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    write_result(make_result(command="good"), path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_result(make_result(command="never written"), path)
    monkeypatch.undo()
    assert read_result(path).command == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.csv", "run.json"]


def test_write_result_needs_a_json_name(tmp_path):
    with pytest.raises(ValueError, match=r"\.json"):
        write_result(make_result(), tmp_path / "run.txt")


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(ResultFileError, match="no such result file") as info:
        read_result(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InputFileError) and isinstance(info.value, NeuronEncoderError)
    assert info.value.exit_code == 2  # the CLI's exit code for bad input


def test_not_json_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{ not json", encoding="utf-8")
    with pytest.raises(ResultFileError, match="not JSON") as info:
        read_result(path)
    assert str(path) in str(info.value)


def test_binary_file_is_not_json(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ResultFileError, match="not JSON"):
        read_result(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema="someone-else/result"), "schema is 'someone-else/result'"),
        (lambda d: d.pop("schema"), "no 'schema' field"),
        (lambda d: d.update(version=3), "version 3 is not supported.*newer"),
        (lambda d: d.update(version="1"), "version must be an integer"),
        (lambda d: d.pop("rows"), "missing field.*rows"),
        (lambda d: d.pop("environment"), "missing field.*environment"),
        (lambda d: d["rows"][1].pop("latency_ms"), "row 1: missing field.*latency_ms"),
        (lambda d: d["rows"][0].update(colour="blue"), "row 0: unexpected field.*colour"),
        (lambda d: d["rows"][0].update(mode="sideways"), "row 0: mode must be one of"),
        (lambda d: d["rows"][0]["latency_ms"].pop("p99"), "row 0: latency_ms keys"),
        (lambda d: d["rows"][0].update(batch_size=1.5), "row 0: batch_size must be an integer"),
        (lambda d: d.update(slo=[{"engine": "neuron"}]), "slo entry is missing"),
        (lambda d: d.update(environment=[]), "environment must be a dict"),
    ],
)
def test_bad_documents_are_named_and_explained(tmp_path, mutate, message):
    data = make_result().to_dict()
    mutate(data)
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(ResultFileError, match=message) as info:
        read_result(path)
    assert str(info.value).startswith(str(path))


def test_top_level_list_is_not_a_result(tmp_path):
    path = write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(ResultFileError, match="top level is a JSON list"):
        read_result(path)


def test_slo_is_optional_in_the_file(tmp_path):
    data = make_result().to_dict()
    del data["slo"]
    assert read_result(write_json(tmp_path / "old.json", data)).slo == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "open"}, "needs rate"),
        ({"rate": 100.0}, "closed-loop row has rate None"),
        ({"mode": "open", "rate": 0.0}, "rate must be > 0"),
        ({"padding_efficiency": 1.5}, "padding_efficiency must be within 0..1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"concurrency": True}, "concurrency must be an integer"),
        ({"throughput_avg": -1.0}, "throughput_avg must be >= 0"),
        ({"throughput_avg": float("nan")}, "throughput_avg must be finite"),
        ({"engine": ""}, "engine must be a non-empty string"),
        ({"latency_ms": {"p50": 1.0}}, "latency_ms keys"),
        ({"errors": -1}, "errors must be >= 0"),
    ],
)
def test_row_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_row(**overrides)


def test_row_numbers_are_stored_as_floats():
    row = make_row(duration_s=30, throughput_avg=2600)
    assert isinstance(row.duration_s, float) and isinstance(row.throughput_avg, float)


def test_optional_row_fields_default_to_none():
    fields = {f.name: getattr(make_row(), f.name) for f in dataclasses.fields(BenchRow)}
    for name in ("accuracy_cosine_min", "harness_overhead_ms", "artifact_sha256", "rate"):
        fields.pop(name)
    row = BenchRow(**fields)
    assert (row.rate, row.accuracy_cosine_min, row.harness_overhead_ms, row.artifact_sha256) == (None,) * 4


def test_unreadable_path_is_named(tmp_path):
    with pytest.raises(ResultFileError, match="cannot read") as info:
        read_result(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_fixtures_are_valid_results(name):
    result = read_result(FIXTURES / name)
    assert result.rows
    assert result.environment["instance_type"]
    assert "FIXTURE" in result.environment["fixture_note"]


def test_fixtures_cover_the_machines_the_report_needs():
    seen = {(read_result(p).environment["instance_type"], row.engine, row.cores)
            for p in FIXTURES.glob("*.json") for row in read_result(p).rows}
    backends = {(instance, backend) for instance, backend, _ in seen}
    assert {("c6i.xlarge", "cpu-eager"), ("c6i.xlarge", "cpu-torchscript-fp32"), ("g5.xlarge", "cuda-fp32"),
            ("g5.xlarge", "cuda-fp16"), ("inf2.xlarge", "neuron")} <= backends
    assert {cores for instance, backend, cores in seen if backend == "neuron"} == {1, 2}


def test_version_1_files_are_read_with_their_backend_column_as_engine():
    """Results written before the rename (version 1, `backend`) still load, under version 2's names."""
    raw = json.loads((FIXTURES / "inf2-xlarge-neuron.json").read_text())
    assert raw["version"] == 1 and "backend" in raw["rows"][0]
    result = read_result(FIXTURES / "inf2-xlarge-neuron.json")
    assert [row.engine for row in result.rows] == [row["backend"] for row in raw["rows"]]
    assert all(row.threads_per_worker is None and row.oversubscribed is False for row in result.rows)
    assert [entry["engine"] for entry in result.slo] == [entry["backend"] for entry in raw.get("slo", [])]


def test_threads_per_worker_and_failures_round_trip(tmp_path):
    row = make_row(threads_per_worker=1, oversubscribed=True)
    result = make_result(rows=[row], failures=[{"engine": "cpu-artifact-bf16", "error": "NumericsError: x"}])
    path, _ = write_result(result, tmp_path / "r.json")
    again = read_result(path)
    assert (again.rows[0].threads_per_worker, again.rows[0].oversubscribed) == (1, True)
    assert again.failures == result.failures
    with pytest.raises(ValueError, match="threads_per_worker"):
        make_row(threads_per_worker=0)
    with pytest.raises(ValueError, match="failures"):
        make_result(failures=[{"engine": "x"}])

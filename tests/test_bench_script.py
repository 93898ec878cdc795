"""benchmarks/bench.py: config files of run_bench calls, ending in one report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuron_encoder.backends import resolve_precision
from neuron_encoder.errors import InputFileError
from neuron_encoder.options import load_config, split_job

from . import scripts

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    return scripts.load_script("benchmarks/bench.py", "bench_script")


def test_shipped_configs_load_as_the_script_loads_them():
    script = load_script()
    for path in sorted((ROOT / "benchmarks" / "configs").glob("*.json")):
        _, runs = load_config(path, "runs", script.RUN_KEYS)
        for settings in runs:
            options, _, kwargs = split_job(settings)  # CompileOptions checks every value
            assert set(kwargs) - {"note"} <= script.RUN_KEYS and "engines" in kwargs, path


def test_a_run_naming_only_the_neuron_target_gets_the_bench_default():
    """The same defaults as `neuron-encoder bench`: auto-cast auto, bf16 matmuls on Neuron."""
    options, _, _ = split_job({"model": "random:bert-base", "engines": "neuron", "target": "inf2"})
    resolved, why = resolve_precision("neuron", options)
    assert (resolved.target, resolved.auto_cast, resolved.auto_cast_type) == ("inf2", "matmult", "bf16") and why


def test_a_config_runs_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURON_ENCODER_NO_IMDS", "1")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"runs": [
        {"note": "tiny", "model": "random:tiny", "engines": "cpu-eager", "batch_sizes": "1", "seq_lens": "8",
         "calls": 5, "warmup": 1}]}))
    report = load_script().run(config, tmp_path / "out")
    assert report == tmp_path / "out" / "report" / "report.md"
    assert "cpu-eager" in report.read_text()
    (result,) = (tmp_path / "out").glob("bench-*.json")
    assert json.loads(result.read_text())["command"].startswith("python benchmarks/bench.py")


def test_unknown_keys_are_refused(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"runs": [{"model": "random:tiny", "colour": "red"}]}))
    with pytest.raises(InputFileError, match="runs entry 1: unknown keys \\['colour'\\]"):
        load_script().run(config, tmp_path)
    config.write_text("[]")
    with pytest.raises(InputFileError, match="non-empty 'runs' list"):
        load_script().run(config, tmp_path)
    assert list(tmp_path.iterdir()) == [config]  # nothing written

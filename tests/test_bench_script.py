"""benchmarks/bench.py: config files of run_bench calls, ending in one report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from neuron_encoder.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_configs_use_only_known_keys():
    script = load_script()
    for path in sorted((ROOT / "benchmarks" / "configs").glob("*.json")):
        config = json.loads(path.read_text())
        for settings in config["runs"]:
            assert set(settings) <= script.RUN_KEYS, path


def test_a_config_runs_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURON_ENCODER_NO_IMDS", "1")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"runs": [
        {"note": "tiny", "model": "random:tiny", "backends": "cpu-eager", "batch_sizes": "1", "seq_lens": "8",
         "calls": 5, "warmup": 1}]}))
    report = load_script().run(config, tmp_path / "out")
    assert report == tmp_path / "out" / "report" / "report.md"
    assert "cpu-eager" in report.read_text()
    (result,) = (tmp_path / "out").glob("bench-*.json")
    assert json.loads(result.read_text())["command"].startswith("python benchmarks/bench.py")


def test_unknown_keys_are_refused(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"runs": [{"model": "random:tiny", "colour": "red"}]}))
    with pytest.raises(ConfigError, match="unknown keys \\['colour'\\]"):
        load_script().run(config, tmp_path)
    config.write_text("[]")
    with pytest.raises(ConfigError, match="not a bench config"):
        load_script().run(config, tmp_path)

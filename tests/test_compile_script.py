"""compile/compile.py and `neuron-encoder compile`: thin layers over compile_model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from neuron_encoder import load_compiled

from .test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args):
    return subprocess.run([sys.executable, str(ROOT / "compile" / "compile.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_script_compiles_every_job(tmp_path):
    config = tmp_path / "jobs.json"
    config.write_text(json.dumps({"jobs": [
        {"model": "random:tiny", "backend": "cpu", "batch_sizes": "1", "seq_lens": "8", "out": str(tmp_path / "a")},
        {"model": "random:tiny", "backend": "cpu", "batch_sizes": "2", "seq_lens": "8", "out": str(tmp_path / "b"),
         "auto_cast": "matmult", "auto_cast_type": "bf16"},
    ]}))
    proc = run_script(config)
    assert proc.returncode == 0, proc.stderr
    assert "== job 2/2" in proc.stdout and f"artifact: {tmp_path / 'b'}" in proc.stdout
    assert load_compiled(tmp_path / "b").manifest["precision"] == "bf16"


def test_shipped_configs_are_valid_jobs():
    for config in (ROOT / "compile" / "configs").glob("*.json"):
        jobs = json.loads(config.read_text())["jobs"]
        assert jobs and all("model" in job and "backend" in job for job in jobs), config


def test_script_bad_config(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"jobs": [{"model": "random:tiny", "colour": "red"}]}))
    proc = run_script(config)
    assert proc.returncode == 2 and "unknown keys ['colour']" in proc.stderr
    config.write_text("[1, 2")
    proc = run_script(config)
    assert proc.returncode == 2 and "not a compile config" in proc.stderr


def test_cli_compile_prints_the_artifact_and_hits_the_cache(monkeypatch, capsys, tmp_path):
    args = ("compile", "--model", "random:tiny", "--backend", "cpu", "--batch-sizes", "1,2", "--seq-lens", "8",
            "--out", str(tmp_path / "art"))
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0
    summary = json.loads(out[out.index("{"):])
    assert summary["cache_hit"] is False and [b["name"] for b in summary["buckets"]] == ["b1_s8", "b2_s8"]
    assert "[1/2] b1_s8" in out
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0 and json.loads(out[out.index("{"):])["cache_hit"] is True


def test_cli_compile_errors_exit_with_their_codes(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "compile", "--model", "random:tiny", "--backend", "neuron",
                           "--target", "inf2")
    assert code == 5 and "torch-neuronx" in err
    code, _, err = run_cli(monkeypatch, capsys, "compile", "--model", "random:tiny", "--auto-cast", "matmul")
    assert code == 2 and "unknown auto-cast 'matmul'" in err
    code, _, err = run_cli(monkeypatch, capsys, "compile", "--model", "random:tiny", "--backend", "cpu",
                           "--seq-lens", "100000", "--out", str(tmp_path / "x"))
    assert code == 4 and "longer than the model's" in err

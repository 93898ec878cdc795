"""compile/compile.py and `neuron-encoder compile`: thin layers over compile_model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from neuron_encoder import load_compiled

from . import scripts
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


def load_script():
    return scripts.load_script("compile/compile.py", "compile_script")


def test_shipped_configs_are_valid_jobs():
    """Each shipped job loads as the script loads it, with options the library accepts."""
    from neuron_encoder.options import load_config, split_job
    script = load_script()
    for config in sorted((ROOT / "compile" / "configs").glob("*.json")):
        _, jobs = load_config(config, "jobs", script.JOB_KEYS)
        for job in jobs:
            options, tolerance, rest = split_job(job)
            assert rest["model"] and rest["backend"] in ("auto", "cpu", "cuda", "neuron"), config
            assert options.precision in ("fp32", "bf16", "fp16", "auto"), config


def test_script_passes_the_gate_tolerance(tmp_path):
    """max_abs and min_cosine are job keys too: an impossible tolerance fails the gate (exit 7)."""
    config = tmp_path / "strict.json"
    config.write_text(json.dumps({"jobs": [{"model": "random:tiny", "backend": "cpu", "batch_sizes": "1",
                                            "seq_lens": "8", "out": str(tmp_path / "a"), "auto_cast": "matmult",
                                            "auto_cast_type": "bf16", "min_cosine": 1.1}]}))
    proc = run_script(config)
    assert proc.returncode == 7 and "min cosine >= 1.1" in proc.stderr
    assert not (tmp_path / "a").exists()


def test_script_bad_config(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"jobs": [{"model": "random:tiny", "colour": "red"}]}))
    proc = run_script(config)
    assert proc.returncode == 2 and "jobs entry 1: unknown keys ['colour']" in proc.stderr
    config.write_text("[1, 2")
    proc = run_script(config)
    assert proc.returncode == 2 and "not JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_compile_prints_the_artifact_and_hits_the_cache(monkeypatch, capsys, tmp_path):
    args = ("compile", "--model", "random:tiny", "--backend", "cpu", "--batch-sizes", "1,2", "--seq-lens", "8",
            "--out", str(tmp_path / "art"))
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0
    summary = json.loads(out[out.index("{"):])
    assert summary["cache_hit"] is False and [b["name"] for b in summary["buckets"]] == ["b1_s8", "b2_s8"]
    assert "[1/1] model: compiling for cpu" in out  # one program serves both buckets
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


def test_lnc_reaches_the_compiler_from_the_cli_and_from_a_config(monkeypatch, capsys, tmp_path, neuron_host):
    """--lnc (and the config key lnc) for trn2; for inf2 exit 2 before anything compiles."""
    from neuron_encoder.options import split_job
    options, _, _ = split_job({"target": "trn2", "lnc": "1"})
    assert options.lnc == 1
    build = neuron_host(None, devices=0)
    code, _, err = run_cli(monkeypatch, capsys, "compile", "--model", "random:tiny", "--backend", "neuron",
                           "--target", "inf2", "--lnc", "2", "--out", str(tmp_path / "inf2"))
    assert code == 2 and "--lnc 2 is for trn2 only" in err and not build.double.calls_to("trace")
    code, out, _ = run_cli(monkeypatch, capsys, "compile", "--model", "random:tiny", "--backend", "neuron",
                           "--target", "trn2", "--lnc", "1", "--batch-sizes", "1", "--seq-lens", "8",
                           "--auto-cast", "none", "--out", str(tmp_path / "trn2"))
    assert code == 0, out
    assert build.double.compilations[0].options["logical_nc_config"] == "1"
    code, _, err = run_cli(monkeypatch, capsys, "compile", "--model", "random:tiny", "--lnc", "3")
    assert code == 2 and "lnc 3 must be 1 or 2" in err

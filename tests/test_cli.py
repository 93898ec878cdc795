"""The command line: a thin layer, so these check wiring, output formats and error exits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from neuron_encoder import cli


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `neuron-encoder ARGS` in-process through main(), which maps errors to exit codes."""
    monkeypatch.setattr(sys, "argv", ["neuron-encoder", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out = capsys.readouterr()
    return info.value.code or 0, out.out, out.err


def test_embed_prints_json(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "embed", "hello there", "general kenobi")
    assert code == 0
    data = json.loads(out)
    assert data["dim"] == 384 and len(data["embeddings"]) == 2 and len(data["embeddings"][0]) == 384


def test_embed_similarity(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "embed", "--similarity", "a cat", "a kitten", "tax law")
    assert code == 0
    sim = json.loads(out)["similarity"]
    assert sim[0][0] == pytest.approx(1.0, abs=1e-5) and sim[0][1] > sim[0][2]


def test_bad_model_path_exits_with_the_checkpoint_code(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "embed", "--model", str(tmp_path / "missing"), "hi")
    assert code == 3 and out == ""
    assert "does not exist" in err


def test_unknown_preset_exits_with_the_config_code(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "params", "--preset", "nope")
    assert code == 2 and "unknown preset" in err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "neuron_encoder", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "quickstart" in result.stdout

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


def test_embed_with_a_random_model_says_it_has_no_tokenizer(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "embed", "--model", "random:tiny", "hi")
    assert code == 2 and out == ""
    assert "random:tiny has no tokenizer" in err and "hub" not in err.split("tokenizer")[0]


def test_unknown_preset_exits_with_the_config_code(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "params", "--preset", "nope")
    assert code == 2 and "unknown preset" in err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "neuron_encoder", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "quickstart" in result.stdout


def test_bench_then_report(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # the compile cache (./artifacts) lands here
    monkeypatch.setenv("NEURON_ENCODER_NO_IMDS", "1")
    code, out, err = run_cli(monkeypatch, capsys, "bench", "--model", "random:tiny", "--engines", "cpu",
                             "--batch-sizes", "2", "--seq-lens", "16", "--concurrency", "1", "--duration", "0.2",
                             "--out-dir", str(tmp_path / "results"))
    assert code == 0, err
    assert "cpu-artifact-fp32" in out and "p50 ms" in out
    assert "fastest CPU engine, batch 2, seq 16: " in out
    assert "compiling for cpu" in err  # progress goes to stderr, the table to stdout
    result = next((tmp_path / "results").glob("bench-*.json"))
    code, out, err = run_cli(monkeypatch, capsys, "report", str(result), "--out-dir", str(tmp_path / "report"),
                             "--instance", "c7i.xlarge")
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "cpu-eager" in report and "c7i.xlarge" in report


def test_report_of_a_result_with_no_rows_is_a_clear_error(monkeypatch, capsys, tmp_path):
    from neuron_encoder.bench.results import BenchResult, write_result
    path, _ = write_result(BenchResult(command="x", environment={}, rows=[],
                                       failures=[{"engine": "cpu-eager", "error": "ShapeError: boom"}]),
                           tmp_path / "empty.json")
    code, out, err = run_cli(monkeypatch, capsys, "report", str(path), "--out-dir", str(tmp_path / "report"))
    assert code == 2 and out == "" and "Traceback" not in err
    assert "no benchmark rows" in err and "cpu-eager: ShapeError: boom" in err
    assert not (tmp_path / "report").exists()


def test_a_sequence_too_long_is_the_same_error_in_bench_and_compile(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    for command in (("bench", "--engines", "cpu-eager"), ("compile", "--backend", "cpu")):
        code, _, err = run_cli(monkeypatch, capsys, *command, "--model", "random:tiny", "--seq-lens", "1000")
        assert code == 4 and "sequence length 1000 is longer than the model's 128 positions" in err


@pytest.mark.parametrize("args, code, words", [
    (("bench", "--engines", "tpu"), 2, "unknown engine 'tpu'"),
    (("bench", "--batch-sizes", "0"), 2, "positive integers"),
    (("bench", "--engines", "neuron"), 5, "torch-neuronx"),
    (("report", "/nonexistent/result.json"), 2, "no such result file"),
    (("report", "x.json", "--prices", "inf2.xlarge=-1"), 2, "inf2.xlarge"),
])
def test_bench_and_report_bad_input(monkeypatch, capsys, tmp_path, args, code, words):
    from neuron_encoder import hardware
    monkeypatch.chdir(tmp_path)
    # a host without the Neuron SDK, even where the suite runs on an instance that has it
    monkeypatch.setattr(hardware, "neuron_sdk_problem", lambda: "torch_neuronx is not installed")
    got, out, err = run_cli(monkeypatch, capsys, *args)
    assert got == code and words in err and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("value, precision", [("fp32", "fp32"), ("bf16", "bf16")])
def test_compile_writes_the_precision_the_variable_names(monkeypatch, capsys, tmp_path, value, precision):
    """NEURON_ENCODER_CPU_PRECISION decides `--auto-cast auto` on the CPU whatever this CPU's flags say."""
    from neuron_encoder import hardware
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"} if value == "bf16" else {"amx_bf16"}))
    monkeypatch.setenv(hardware.CPU_PRECISION_VARIABLE, value)
    out_dir = tmp_path / "art"
    code, _, err = run_cli(monkeypatch, capsys, "compile", "--model", "random:tiny", "--backend", "cpu",
                           "--batch-sizes", "1", "--seq-lens", "16", "--out", str(out_dir))
    assert code == 0, err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["precision"] == precision and "(NEURON_ENCODER_CPU_PRECISION)" in manifest["backend_reason"]


def test_a_bad_cpu_precision_is_exit_2_and_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NEURON_ENCODER_CPU_PRECISION", "fp64")
    code, out, err = run_cli(monkeypatch, capsys, "compile", "--model", "random:tiny", "--backend", "cpu",
                             "--batch-sizes", "1", "--seq-lens", "16", "--out", str(tmp_path / "art"))
    assert code == 2 and out == "" and "Traceback" not in err
    assert "NEURON_ENCODER_CPU_PRECISION='fp64': use one of auto, fp32, bf16" in err
    assert list(tmp_path.iterdir()) == []


def test_classify_and_rerank_print_json_and_refuse_the_wrong_model(monkeypatch, capsys, tmp_path):
    from tests.families import build_classifier, build_tokenizer
    size = build_tokenizer("unigram", tmp_path)
    build_classifier("xlm-roberta", tmp_path, num_labels=1, vocab_size=size)
    code, out, _ = run_cli(monkeypatch, capsys, "rerank", "a dog", "a lazy dog", "a guitar", "--model", str(tmp_path))
    assert code == 0
    results = json.loads(out)["results"]
    assert sorted(r["index"] for r in results) == [0, 1] and {r["text"] for r in results} == {"a lazy dog", "a guitar"}
    assert all(0 < r["score"] < 1 for r in results)  # sigmoid of a one-label reranker
    code, out, _ = run_cli(monkeypatch, capsys, "classify", "--pairs", "a dog", "a lazy dog", "--raw-scores",
                           "--model", str(tmp_path))
    assert code == 0 and [p["label"] for p in json.loads(out)["predictions"][0]] == ["LABEL_0"]
    code, out, err = run_cli(monkeypatch, capsys, "classify", "a cat")  # neither --model nor --artifact
    assert code == 2 and "one of --model" in err
    code, out, err = run_cli(monkeypatch, capsys, "embed", "--model", str(tmp_path), "a cat")
    assert code == 2 and "use neuron-encoder rerank" in err
    code, out, err = run_cli(monkeypatch, capsys, "classify", "--model", "minilm", "a cat")
    assert code == 2 and "embedding model: it cannot classify" in err

"""The README's promises: its two commands exist as written, and the quick start runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from neuron_encoder import hardware
from neuron_encoder.quickstart import run_quickstart

from .conftest import cpu_precision

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    main_job, tests = readme_commands()
    assert main_job == "bash scripts/quickstart.sh" and (ROOT / "scripts/quickstart.sh").exists()
    assert tests == "bash scripts/test.sh" and (ROOT / "scripts/test.sh").exists()
    assert tests in (ROOT / ".ci/run").read_text()
    assert "neuron-encoder\" quickstart" in (ROOT / "scripts/quickstart.sh").read_text()


def test_quick_start_runs(tmp_path, monkeypatch):
    """The main job end to end, shortened: compile, numerics, benchmark against eager, report; on a CPU
    host whatever this one has (a GPU or Neuron host would race other engines)."""
    monkeypatch.chdir(tmp_path)  # its ./artifacts cache lands here
    monkeypatch.setattr(hardware, "is_cuda_available", lambda: False)
    monkeypatch.setattr(hardware, "has_neuron_devices", lambda: False)
    precision = cpu_precision()
    lines: list[str] = []
    outcome = run_quickstart("minilm", run_dir=tmp_path / "run", duration_s=0.3, batch_sizes="1",
                             corpus_sentences=64, echo=lines.append)
    text = "\n".join(lines)
    assert "multi-head attention" in text and "cosine similarity" in text
    sim = outcome["similarity"]
    assert sim[0][1] > sim[0][3]  # the guitar paraphrase beats the stock market
    assert re.search(r"min cosine (1\.0+|0\.99\d+): ok", text)  # the compile's numerics gate ran
    engines = {row.engine for row in outcome["result"].rows}
    ours = {"cpu-eager", "cpu-artifact-fp32"} | ({"cpu-artifact-bf16"} if precision == "bf16" else set())
    peers = {"cpu-onnxruntime-fp32", "cpu-openvino-fp32", "cpu-openvino-bf16"}  # where installed
    assert ours <= engines <= ours | peers
    assert "fastest CPU engine, batch 1, seq 128: " in text
    report = outcome["report_path"].read_text()
    assert f"cpu-artifact-{precision}" in report and (outcome["report_path"].parent / "latency_vs_throughput.png").exists()
    assert outcome["result_path"].exists() and outcome["result_path"].with_suffix(".csv").exists()
    # The artifact has the bucket grid, and the summary races it against sentence-transformers.
    manifest = json.loads((outcome["artifact"] / "manifest.json").read_text())
    assert sorted({b["seq"] for b in manifest["buckets"]}) == [32, 64, 128, 256]
    corpus = outcome["corpus"]
    assert corpus["sentences"] == 64 and 0 < corpus["padding_efficiency"] <= 1.0  # batch-1 buckets: low
    assert corpus["artifact_sentences_per_s"] > 0 and corpus["sentence_transformers_sentences_per_s"] > 0
    assert "sentences/s" in text and "this artifact is" in text

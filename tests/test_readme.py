"""The README's promises: its two commands exist as written, and the quick start runs."""

from __future__ import annotations

import re
from pathlib import Path

from neuron_encoder.quickstart import run_quickstart

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


def test_quick_start_runs():
    lines: list[str] = []
    result = run_quickstart("minilm", echo=lines.append)
    text = "\n".join(lines)
    assert "multi-head attention" in text and "cosine similarity" in text
    sim = result["similarity"]
    assert sim[0][1] > sim[0][3]  # the guitar paraphrase beats the stock market

"""The merged report from the fixture results of three machines (c6i CPU, g5 GPU, inf2 Neuron)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from neuron_encoder.bench.prices import PUBLISHED, load_prices
from neuron_encoder.bench.report import format_cpu_best, format_summary_table, write_report
from neuron_encoder.bench.results import ResultFileError, read_result
from neuron_encoder.bench.stats import cost_per_million

FIXTURES = Path(__file__).parent / "fixtures" / "results"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fixture_paths() -> list[Path]:
    paths = sorted(FIXTURES.glob("*.json"))
    assert len(paths) >= 3
    return paths


def parse_tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Markdown tables by the heading above them, each as a list of {column: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading = ""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|-"):
            header = split_row(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = split_row(lines[i])
                assert len(cells) == len(header), f"row with {len(cells)} cells under {len(header)} columns: {lines[i]}"
                rows.append(dict(zip(header, cells)))
                i += 1
            tables[heading] = rows
            continue
        i += 1
    return tables


def split_row(line: str) -> list[str]:
    cells, current, escaped = [], "", False
    for char in line.strip()[1:-1]:
        if char == "|" and not escaped:
            cells.append(current.strip())
            current = ""
        else:
            current += char
        escaped = char == "\\"
    cells.append(current.strip())
    return [cell.replace("\\|", "|") for cell in cells]


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def find_line(table: list[dict[str, str]], row, instance: str) -> dict[str, str]:
    matches = [line for line in table
               if line["engine"] == row.engine and line["instance"] == instance and line["label"] == row.label
               and int(line["batch"]) == row.batch_size and int(line["seq"]) == row.seq_len
               and int(line["cores"]) == row.cores and line["precision"] == row.precision]
    assert len(matches) == 1, f"expected one table line for {row.engine}/{instance}/{row.label}, found {matches}"
    return matches[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = write_report(fixture_paths(), out)
    return out, path, path.read_text(encoding="utf-8")


def test_writes_every_output(report):
    out, path, _ = report
    assert path == out / "report.md"
    for name in ("latency_vs_throughput.png", "throughput_by_batch.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC, f"{name} is not a PNG"
        assert len(data) > 5_000
    assert sorted(p.name for p in out.iterdir()) == [
        "latency_vs_throughput.png", "merged.json", "report.md", "throughput_by_batch.png"]


def test_main_table_has_every_row_with_its_cost(report):
    _, _, markdown = report
    table = parse_tables(markdown)["Results: bert-base-uncased"]
    prices = load_prices(None)
    expected_lines = 0
    for path in fixture_paths():
        result = read_result(path)
        instance = result.environment["instance_type"]
        for row in result.rows:
            line = find_line(table, row, instance)
            expected_cost = cost_per_million(row.throughput_avg, prices.price(instance))
            assert number(line["USD / 1M inf"]) == pytest.approx(expected_cost, rel=1e-3)
            assert number(line["p50 ms"]) == pytest.approx(row.latency_ms["p50"], rel=1e-2)
            assert number(line["p99 ms"]) == pytest.approx(row.latency_ms["p99"], rel=1e-2)
            assert number(line["inf/s avg"]) == pytest.approx(row.throughput_avg, rel=1e-2)
            expected_lines += 1
    assert len(table) == expected_lines
    neuron_b8 = next(line for line in table if line["engine"] == "neuron" and line["batch"] == "8")
    assert neuron_b8["USD / 1M inf"] == "0.08045"  # 1e6 / 2618 * 0.7582 / 3600, by hand
    backends = {(line["engine"], line["instance"]) for line in table}
    assert backends == {("cpu-eager", "c6i.xlarge"), ("cpu-torchscript-fp32", "c6i.xlarge"), ("cuda-fp32", "g5.xlarge"),
                        ("cuda-fp16", "g5.xlarge"), ("neuron", "inf2.xlarge")}


def test_every_engine_is_set_against_the_cpus_best_on_its_machine(report):
    _, _, markdown = report
    table = parse_tables(markdown)["Against the CPU's best"]
    cpu = read_result(FIXTURES / "c6i-xlarge-cpu.json")
    for batch in (1, 8):
        rows = {r.engine: r for r in cpu.rows if r.batch_size == batch}
        best = max(rows.values(), key=lambda r: r.throughput_avg)
        lines = [line for line in table if line["batch"] == str(batch)]
        assert {line["engine"] for line in lines} == set(rows) and {line["CPU's best"] for line in lines} == {best.engine}
        for line in lines:
            assert number(line["x CPU's best"]) == pytest.approx(rows[line["engine"]].throughput_avg
                                                                 / best.throughput_avg, abs=0.005)
    assert {line["instance"] for line in table} == {"c6i.xlarge"}  # the GPU and inf2 files have no CPU rows


def test_the_terminal_names_the_fastest_cpu_engine():
    rows = read_result(FIXTURES / "c6i-xlarge-cpu.json").rows
    lines = format_cpu_best(rows).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("fastest CPU engine, batch 1, seq 128: cpu-torchscript-fp32 (fp32) ")
    one = {r.engine: r.throughput_avg for r in rows if r.batch_size == 1}
    assert lines[0].endswith(f"inf/s at concurrency 1; then cpu-eager {one['cpu-eager'] / one['cpu-torchscript-fp32']:.2f}x")
    assert format_cpu_best([r for r in rows if not r.engine.startswith("cpu-")]) == ""


def test_open_loop_rows_show_their_rate(report):
    _, _, markdown = report
    table = parse_tables(markdown)["Results: bert-base-uncased"]
    assert [line["conc."] for line in table if "open loop" in line["label"]] == ["open 1,000/s"]


def test_price_basis_and_machines_are_stated(report):
    _, _, markdown = report
    assert "Price basis: on-demand, us-east-1, Linux" in markdown
    assert "2026" in markdown and "reserved" in markdown
    for text in ("**c6i.xlarge**", "**g5.xlarge**", "**inf2.xlarge**", "NVIDIA A10G", "Neuron devices: 1",
                 "neuronx-cc 2.27.5334.0", "Git commit: 0123456789ab"):
        assert text in markdown
    assert "3 of" in markdown  # the fixture row with failed calls is flagged


def test_published_numbers_are_separate_and_labelled(report):
    _, _, markdown = report
    heading = "AWS published numbers (not measured by us)"
    assert f"## {heading}" in markdown
    assert markdown.index(f"## {heading}") > markdown.index("## Results: bert-base-uncased")
    section = markdown[markdown.index(f"## {heading}"):]
    assert "Published by AWS, not measured by this project" in section
    assert "NeuronPerf" in section and "matmult-bf16" in section
    published = parse_tables(markdown)[heading]
    assert len(published) == len(PUBLISHED)
    for line, entry in zip(published, PUBLISHED):
        assert (line["model"], line["instance"]) == (entry["model"], entry["instance"])
        assert int(line["batch"]) == entry["batch"]
        assert number(line["inf/s"]) == pytest.approx(entry["throughput"])
        price = load_prices(None).price(entry["instance"])
        expected = cost_per_million(entry["throughput"], price)
        assert number(line["USD / 1M inf (on-demand)"]) == pytest.approx(expected, rel=1e-3)


def test_slo_section_lists_each_entry(report):
    _, _, markdown = report
    slo = parse_tables(markdown)["Best throughput within a p99 latency SLO"]
    assert {(line["engine"], line["instance"]) for line in slo} == {
        ("cuda-fp16", "g5.xlarge"), ("neuron", "inf2.xlarge")}
    neuron = next(line for line in slo if line["engine"] == "neuron")
    assert number(neuron["best inf/s"]) == 2618
    assert number(neuron["USD / 1M inf"]) == pytest.approx(cost_per_million(2618, 0.7582), rel=1e-3)


def test_no_slo_section_without_slo_entries(tmp_path):
    path = tmp_path / "c6i.json"
    shutil.copy(FIXTURES / "c6i-xlarge-cpu.json", path)
    markdown = write_report([path], tmp_path / "out").read_text()
    assert "SLO" not in markdown


def test_merged_json_has_every_row_priced(report):
    out, _, _ = report
    merged = json.loads((out / "merged.json").read_text())
    assert merged["schema"] == "neuron-encoder/bench-report"
    total = sum(len(read_result(p).rows) for p in fixture_paths())
    assert len(merged["rows"]) == total
    assert len(merged["sources"]) == len(fixture_paths())
    for row in merged["rows"]:
        assert row["cost_per_1m_usd"] == pytest.approx(cost_per_million(row["throughput_avg"], row["price_per_h"]))
    assert merged["published"] == PUBLISHED


def without_instance_type(tmp_path: Path, hostname: str = "devbox") -> Path:
    data = json.loads((FIXTURES / "inf2-xlarge-neuron.json").read_text())
    data["environment"]["instance_type"] = None
    data["environment"]["hostname"] = hostname
    path = tmp_path / "local.json"
    path.write_text(json.dumps(data))
    return path


def test_machine_without_instance_type_is_shown_by_hostname_without_cost(tmp_path):
    markdown = write_report([without_instance_type(tmp_path)], tmp_path / "out").read_text()
    table = parse_tables(markdown)["Results: bert-base-uncased"]
    assert {line["instance"] for line in table} == {"devbox (no instance type)"}
    assert {line["USD / 1M inf"] for line in table} == {"-"}
    assert "No cost for devbox (no instance type)" in markdown


def test_uncommitted_changes_are_stated_beside_the_commit(tmp_path):
    data = json.loads(fixture_paths()[0].read_text())
    data["environment"].update(git_commit="0123456789abcdef" * 2 + "01234567", git_dirty=True)
    path = tmp_path / "dirty.json"
    path.write_text(json.dumps(data))
    markdown = write_report([path], tmp_path / "out").read_text()
    assert "Git commit: 0123456789ab (with uncommitted changes)" in markdown


def test_instance_override_prices_machines_without_instance_type(tmp_path):
    path = without_instance_type(tmp_path)
    markdown = write_report([path, FIXTURES / "g5-xlarge-cuda.json"], tmp_path / "out",
                            instance_override="inf2.xlarge").read_text()
    table = parse_tables(markdown)["Results: bert-base-uncased"]
    assert {line["instance"] for line in table} == {"inf2.xlarge", "g5.xlarge"}
    for row in read_result(path).rows:
        line = find_line(table, row, "inf2.xlarge")
        assert number(line["USD / 1M inf"]) == pytest.approx(cost_per_million(row.throughput_avg, 0.7582), rel=1e-3)
    assert "given by the user, not detected" in markdown


def test_price_override_changes_costs_and_says_so(tmp_path):
    prices = load_prices("inf2.xlarge=1.0")
    markdown = write_report(fixture_paths(), tmp_path / "out", prices=prices).read_text()
    table = parse_tables(markdown)["Results: bert-base-uncased"]
    for row in read_result(FIXTURES / "inf2-xlarge-neuron.json").rows:
        line = find_line(table, row, "inf2.xlarge")
        assert number(line["USD / 1M inf"]) == pytest.approx(cost_per_million(row.throughput_avg, 1.0), rel=1e-3)
    assert "Overridden from override 'inf2.xlarge=1.0': inf2.xlarge" in markdown


def test_pipes_in_labels_do_not_break_the_table(tmp_path):
    data = json.loads((FIXTURES / "c6i-xlarge-cpu.json").read_text())
    data["rows"][0]["label"] = "threads | 4"
    path = tmp_path / "pipes.json"
    path.write_text(json.dumps(data))
    markdown = write_report([path], tmp_path / "out").read_text()
    table = parse_tables(markdown)["Results: bert-base-uncased"]
    assert "threads | 4" in {line["label"] for line in table}


def test_empty_list_of_files_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="at least one result file"):
        write_report([], tmp_path / "out")


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ResultFileError, match="no such result file") as info:
        write_report([FIXTURES / "c6i-xlarge-cpu.json", missing], tmp_path / "out")
    assert str(missing) in str(info.value)
    assert not (tmp_path / "out" / "report.md").exists()


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("this is not a result")
    with pytest.raises(ResultFileError, match="not JSON") as info:
        write_report([bad], tmp_path / "out")
    assert str(bad) in str(info.value)


def test_format_summary_table_lists_each_row():
    rows = read_result(FIXTURES / "inf2-xlarge-neuron.json").rows
    text = format_summary_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["engine", "label", "precision"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + len(rows)
    for line, row in zip(lines[2:], rows):
        assert line.startswith(row.engine)
        assert row.label in line
        assert f"{row.latency_ms['p50']:.2f}" in line
    widths = {len(line) for line in lines[2:]}
    assert len(widths) == 1  # columns line up


def test_format_summary_table_of_nothing():
    assert format_summary_table([]) == "(no benchmark rows)"

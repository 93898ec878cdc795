"""Merge result files from several machines into one Markdown report, two plots and a merged JSON.

Each machine benchmarks itself (an inf2, a GPU box, a CPU box); only the report puts them side
by side, with the cost of each row at a stated price basis and AWS's own numbers kept apart.
"""

from __future__ import annotations

import io
import json
import textwrap
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuron_encoder.bench.environment import PACKAGES
from neuron_encoder.bench.prices import PUBLISHED, PUBLISHED_SOURCE, PriceTable, load_prices
from neuron_encoder.bench.results import BenchResult, BenchRow, read_result
from neuron_encoder.errors import InputFileError
from neuron_encoder.files import atomic_write_bytes, utc_now
from neuron_encoder.bench.stats import cost_per_million

REPORT_SCHEMA = "neuron-encoder/bench-report"
REPORT_VERSION = 1


@dataclass(frozen=True)
class Machine:
    """One result file's machine: the name shown in tables and the instance type it is priced as."""

    path: Path
    result: BenchResult
    name: str
    instance_type: str | None  # None: not priced
    assumed: bool  # instance type came from instance_override, not from the machine


@dataclass(frozen=True)
class ReportRow:
    """A measured row with its machine and cost."""

    row: BenchRow
    machine: Machine
    price_per_h: float | None
    cost_per_1m: float | None


def _machine(path: Path, result: BenchResult, instance_override: str | None) -> Machine:
    env = result.environment
    detected = env.get("instance_type")
    if detected:
        return Machine(path, result, str(detected), str(detected), assumed=False)
    if instance_override:
        return Machine(path, result, instance_override, instance_override, assumed=True)
    hostname = env.get("hostname") or path.stem
    return Machine(path, result, f"{hostname} (no instance type)", None, assumed=False)


def _cost(throughput: float, price: float | None) -> float | None:
    if price is None or throughput <= 0:
        return None
    return cost_per_million(throughput, price)


def _row_key(item: ReportRow) -> tuple:
    r = item.row
    return (r.engine, item.machine.name, r.precision, r.batch_size, r.seq_len, r.mode,
            r.concurrency, r.rate or 0.0, r.cores, r.label)


# Number formats, shared by the Markdown and the terminal table.

def _fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_cost(value: float | None) -> str:
    """Four significant digits without scientific notation: 0.1053, 1.429, 12.35."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    decimals = max(0, 3 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _fmt_cosine(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _fmt_accuracy(row: BenchRow) -> str:
    """An embedder's min cosine; a classifier's or reranker's max |logit difference| and top-1 agreement."""
    if row.accuracy_logit_max_abs is None:
        return _fmt_cosine(row.accuracy_cosine_min)
    return f"logits ±{row.accuracy_logit_max_abs:.1e}, top-1 {row.accuracy_top1:.0%}"


def _model_with_task(row: BenchRow) -> str:
    return row.model if row.task == "embedding" else f"{row.model} ({row.task})"


def _fmt_load(row: BenchRow) -> str:
    if row.mode == "open":
        return f"open {_fmt_rate(row.rate or 0.0)}/s"
    return str(row.concurrency)


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|")
    lines.extend("| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows)
    return lines


_SUMMARY_HEADER = ("engine", "label", "precision", "batch", "seq", "conc.", "cores", "p50 ms", "p95 ms",
                   "p99 ms", "inf/s avg", "inf/s peak", "pad. eff.", "vs fp32", "errors")


def _summary_cells(row: BenchRow) -> list[str]:
    lat = row.latency_ms
    return [row.engine, row.label, row.precision, str(row.batch_size), str(row.seq_len), _fmt_load(row),
            str(row.cores), _fmt_ms(lat["p50"]), _fmt_ms(lat["p95"]), _fmt_ms(lat["p99"]),
            _fmt_rate(row.throughput_avg), _fmt_rate(row.throughput_peak), f"{row.padding_efficiency:.0%}",
            _fmt_accuracy(row), str(row.errors)]


def format_summary_table(rows: Sequence[BenchRow]) -> str:
    """Fixed-width table of rows for the terminal; numbers right-aligned, one line per row."""
    if not rows:
        return "(no benchmark rows)"
    table = [list(_SUMMARY_HEADER)] + [_summary_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_SUMMARY_HEADER))]
    text_columns = {0, 1, 2}
    lines = []
    for line in table:
        cells = [cell.ljust(w) if i in text_columns else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _best_by_engine(rows: Sequence[BenchRow]) -> dict[tuple[str, int, int, str], BenchRow]:
    """Per (model, batch, seq, engine), the closed-loop row with the most throughput over concurrency
    (an open-loop row's throughput is the rate offered, not the engine's best)."""
    best: dict[tuple[str, int, int, str], BenchRow] = {}
    for row in rows:
        key = (row.model, row.batch_size, row.seq_len, row.engine)
        if row.mode == "closed" and (key not in best or row.throughput_avg > best[key].throughput_avg):
            best[key] = row
    return best


def cpu_best(rows: Sequence[BenchRow]) -> dict[tuple[str, int, int], BenchRow]:
    """Per (model, batch, seq), the fastest CPU engine's best row: what an accelerator must beat."""
    best: dict[tuple[str, int, int], BenchRow] = {}
    for (model, batch, seq, engine), row in _best_by_engine(rows).items():
        key = (model, batch, seq)
        if engine.startswith("cpu-") and (key not in best or row.throughput_avg > best[key].throughput_avg):
            best[key] = row
    return best


def format_cpu_best(rows: Sequence[BenchRow]) -> str:
    """One line per (model, batch, seq): the fastest CPU engine, and each other CPU engine's share of it."""
    by_engine = _best_by_engine(rows)
    lines = []
    for (model, batch, seq), best in sorted(cpu_best(rows).items()):
        others = [r for (m, b, s, e), r in sorted(by_engine.items())
                  if (m, b, s) == (model, batch, seq) and e.startswith("cpu-") and r is not best]
        lines.append(f"fastest CPU engine, batch {batch}, seq {seq}: {best.engine} ({best.precision}) "
                     f"{_fmt_rate(best.throughput_avg)} inf/s at concurrency {best.concurrency}"
                     + (f"; then {', '.join(f'{r.engine} {r.throughput_avg / best.throughput_avg:.2f}x' for r in others)}"
                        if others else ""))
    return "\n".join(lines)


def _cpu_best_lines(items: Sequence[ReportRow]) -> list[str]:
    """Every engine's best throughput on a machine as a multiple of that machine's fastest CPU engine."""
    header = ("model", "instance", "batch", "seq", "engine", "precision", "best inf/s", "CPU's best",
              "its inf/s", "x CPU's best")
    table = []
    for machine in sorted({item.machine.name for item in items}):
        rows = [item.row for item in items if item.machine.name == machine]
        best = cpu_best(rows)
        for (model, batch, seq, engine), row in sorted(_best_by_engine(rows).items()):
            cpu = best.get((model, batch, seq))
            if cpu is not None:
                table.append([model, machine, batch, seq, engine, row.precision, _fmt_rate(row.throughput_avg),
                              cpu.engine, _fmt_rate(cpu.throughput_avg),
                              f"{row.throughput_avg / cpu.throughput_avg:.2f}"])
    if not table:
        return []
    return ["", "## Against the CPU's best", "",
            "Each engine's best closed-loop throughput (over concurrency) as a multiple of the fastest CPU "
            "engine on the same machine (ours, ONNX Runtime or OpenVINO), at the same batch and sequence length.",
            ""] + _md_table(header, table, right={2, 3, 6, 8, 9})


def _machine_lines(machines: Sequence[Machine]) -> list[str]:
    lines = ["## Machines", ""]
    for m in machines:
        env = m.result.environment
        name = f"**{m.name}**" + (" (instance type given by the user, not detected)" if m.assumed else "")
        region = f", {env['region']}" if env.get("region") else ""
        lines.append(f"- {name}{region}: `{m.path.name}`, run {m.result.created}, command `{m.result.command}`")
        cores = env.get("logical_cores")
        memory = env.get("memory_gib")
        lines.append(f"  - CPU: {env.get('cpu_model') or 'unknown'}, {cores or '?'} logical cores, {memory or '?'} GiB"
                     f", host {env.get('hostname') or 'unknown'}")
        accelerators = []
        gpu = env.get("gpu")
        if gpu:
            accelerators.append(f"GPU {gpu.get('name')} x{gpu.get('count')}")
        if env.get("neuron_devices"):
            accelerators.append(f"Neuron devices: {env['neuron_devices']}")
        lines.append(f"  - Accelerators: {', '.join(accelerators) or 'none'}")
        packages = env.get("packages") or {}
        versions = [f"Python {env.get('python') or '?'}"]
        versions += [f"{name} {packages[name]}" for name in PACKAGES if packages.get(name)]
        lines.append(f"  - Versions: {', '.join(versions)}")
        commit = env.get("git_commit")
        manifest = env.get("artifact_manifest_sha256")
        dirty = " (with uncommitted changes)" if env.get("git_dirty") else ""
        lines.append(f"  - Git commit: {commit[:12] + dirty if commit else 'unknown'}"
                     + (f"; artifact manifest sha256 {manifest[:12]}" if manifest else ""))
    return lines


_MAIN_HEADER = ("engine", "instance", "precision", "batch", "seq", "conc.", "cores", "p50 ms", "p95 ms", "p99 ms",
                "inf/s avg", "inf/s peak", "pad. eff.", "vs fp32", "USD / 1M inf", "label")


def _main_cells(item: ReportRow) -> list[str]:
    r = item.row
    lat = r.latency_ms
    return [r.engine, item.machine.name, r.precision, str(r.batch_size), str(r.seq_len), _fmt_load(r), str(r.cores),
            _fmt_ms(lat["p50"]), _fmt_ms(lat["p95"]), _fmt_ms(lat["p99"]), _fmt_rate(r.throughput_avg),
            _fmt_rate(r.throughput_peak), f"{r.padding_efficiency:.0%}", _fmt_accuracy(r),
            _fmt_cost(item.cost_per_1m), r.label]


def _results_lines(items: Sequence[ReportRow], prices: PriceTable) -> list[str]:
    lines: list[str] = []
    for model in sorted({item.row.model for item in items}):
        rows = sorted((item for item in items if item.row.model == model), key=_row_key)
        lines += ["", f"## Results: {_model_with_task(rows[0].row)}", ""]
        lines += _md_table(_MAIN_HEADER, [_main_cells(item) for item in rows], right=set(range(3, 15)))
    lines += ["", "Latency is per call (one batch); inf/s counts inferences (samples) per second, peak over 1 s "
              "windows. Cost per 1M inferences = 1e6 / (inf/s avg) x price per hour / 3600.", "",
              f"Price basis: {prices.source}"]
    unpriced = sorted({item.machine.name for item in items if item.price_per_h is None})
    if unpriced:
        lines += ["", f"No cost for {', '.join(unpriced)}: no price for that instance type, or no instance type "
                  "recorded (give one with instance_override / --instance)."]
    failing = [item for item in sorted(items, key=_row_key) if item.row.errors]
    if failing:
        lines += ["", "Rows with failed calls (their numbers cover the successful calls only):"]
        lines += [f"- {i.row.engine} on {i.machine.name}, batch {i.row.batch_size}, {_fmt_load(i.row)}: "
                  f"{i.row.errors} of {i.row.calls} calls failed" for i in failing]
    return lines


def _failure_lines(machines: Sequence[Machine]) -> list[str]:
    failures = [(m.name, f) for m in machines for f in m.result.failures]
    if not failures:
        return []
    return ["", "## Engines that failed (no rows)", ""] + [f"- {f['engine']} on {name}: {f['error']}"
                                                          for name, f in failures]


def _published_lines(prices: PriceTable) -> list[str]:
    lines = ["", "## AWS published numbers (not measured by us)", "",
             f"Published by AWS, not measured by this project: {PUBLISHED_SOURCE}. The cost column prices "
             "their throughput at our on-demand table above, not at AWS's reserved rates.", ""]
    rows = [[p["model"], p["instance"], p["batch"], p["seq"], _fmt_rate(p["throughput"]), _fmt_ms(p["p50_ms"]),
             _fmt_ms(p["p99_ms"]), _fmt_cost(_cost(p["throughput"], prices.price(p["instance"])))]
            for p in PUBLISHED]
    header = ("model", "instance", "batch", "seq", "inf/s", "p50 ms", "p99 ms", "USD / 1M inf (on-demand)")
    return lines + _md_table(header, rows, right=set(range(2, 8)))


def _slo_entries(machines: Sequence[Machine], prices: PriceTable) -> list[dict[str, Any]]:
    entries = []
    for m in machines:
        price = prices.price(m.instance_type)
        for entry in m.result.slo:
            entries.append({**entry, "machine": m.name, "price_per_h": price,
                            "cost_per_1m_usd": _cost(entry["best_throughput"], price)})
    return sorted(entries, key=lambda e: (e["engine"], e["machine"], e["slo_p99_ms"]))


def _slo_lines(entries: Sequence[dict[str, Any]]) -> list[str]:
    if not entries:
        return []
    header = ("engine", "instance", "SLO p99 ms", "best inf/s", "at concurrency", "p99 ms", "USD / 1M inf")
    rows = [[e["engine"], e["machine"], _fmt_ms(e["slo_p99_ms"]), _fmt_rate(e["best_throughput"]),
             e["at_concurrency"], _fmt_ms(e["p99_ms"]), _fmt_cost(e["cost_per_1m_usd"])] for e in entries]
    return ["", "## Best throughput within a p99 latency SLO", "",
            "The highest throughput each engine reached while its p99 stayed within the SLO.", ""] + \
        _md_table(header, rows, right=set(range(2, 7)))


def _series_name(item: ReportRow, many_models: bool) -> str:
    name = f"{item.row.engine} @ {item.machine.name}"
    return f"{item.row.model}: {name}" if many_models else name


def _save_figure(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def _plain_ticks(axis) -> None:
    """Plain numbers on a log axis (200, not 2 x 10^2), with a few minor labels where decades are sparse."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 10 else f"{value:g}")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def _plot_title(items: Sequence[ReportRow], what: str, width: int = 140) -> str:
    """What the plot shows, on what: model(s), machine(s) with their CPU, precision(s)."""
    models = sorted({i.row.model for i in items})
    machines = sorted({f"{i.machine.name} ({i.machine.result.environment.get('cpu_model') or 'CPU unknown'})"
                       for i in items})
    precisions = sorted({i.row.precision for i in items})
    return textwrap.fill(f"{what}: {', '.join(models)}, {', '.join(precisions)}", width) + "\n" + \
        textwrap.fill(f"on {'; '.join(machines)}", width)


def _plot_latency_vs_throughput(items: Sequence[ReportRow], path: Path) -> None:
    """One line per engine, machine and batch size, concurrency (or open-loop rate) along it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    many_models = len({item.row.model for item in items}) > 1
    series: dict[str, list[ReportRow]] = {}
    for item in items:
        name = f"{_series_name(item, many_models)}, batch {item.row.batch_size}, seq {item.row.seq_len}" + \
            (", open loop" if item.row.mode == "open" else "")
        series.setdefault(name, []).append(item)
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, key in zip(axes, ("p50", "p99")):
        for name, members in sorted(series.items()):
            members = sorted(members, key=lambda i: (i.row.rate or 0.0, i.row.concurrency))
            ax.plot([i.row.throughput_avg for i in members], [i.row.latency_ms[key] for i in members],
                    marker="o", linestyle="-", label=name)
            for i in members:
                load = f"{_fmt_rate(i.row.rate or 0.0)}/s" if i.row.mode == "open" else f"c{i.row.concurrency}"
                ax.annotate(load, (i.row.throughput_avg, i.row.latency_ms[key]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.set_xlabel("throughput (inferences/s, average)")
        ax.set_ylabel(f"{key} latency per call (ms)")
        ax.set_title(f"{key} latency against throughput (points: c = concurrency)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="x-small")
    fig.suptitle(_plot_title(items, "Latency against throughput"), fontsize=10)
    _save_figure(fig, path)


def _plot_throughput_by_batch(items: Sequence[ReportRow], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    many_models = len({item.row.model for item in items}) > 1
    best: dict[str, dict[int, float]] = {}
    for item in items:
        per_batch = best.setdefault(_series_name(item, many_models), {})
        batch = item.row.batch_size
        per_batch[batch] = max(per_batch.get(batch, 0.0), item.row.throughput_avg)
    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, per_batch in sorted(best.items()):
        batches = sorted(per_batch)
        ax.plot(batches, [per_batch[b] for b in batches], marker="o", label=name)
    ax.set_xscale("log", base=2)
    all_batches = sorted({b for per_batch in best.values() for b in per_batch})
    ax.set_xticks(all_batches, labels=[str(b) for b in all_batches])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yscale("log")
    _plain_ticks(ax.yaxis)
    ax.set_xlabel("batch size")
    ax.set_ylabel("best throughput (inferences/s, average)")
    ax.set_title(_plot_title(items, "Throughput by batch size (best over concurrency)", width=95), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    _save_figure(fig, path)


def _merged(created: str, machines: Sequence[Machine], items: Sequence[ReportRow], slo: list[dict[str, Any]],
            prices: PriceTable) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "version": REPORT_VERSION,
        "created": created,
        "price_source": prices.source,
        "sources": [{"path": str(m.path), "machine": m.name, "instance_type": m.instance_type,
                     "instance_type_assumed": m.assumed, "created": m.result.created, "command": m.result.command,
                     "environment": m.result.environment} for m in machines],
        "rows": [{**item.row.to_dict(), "machine": item.machine.name, "instance_type": item.machine.instance_type,
                  "source": str(item.machine.path), "price_per_h": item.price_per_h,
                  "cost_per_1m_usd": item.cost_per_1m} for item in sorted(items, key=_row_key)],
        "slo": slo,
        "published": PUBLISHED,
    }


def write_report(
    result_paths: Sequence[Path],
    out_dir: Path,
    prices: PriceTable | None = None,
    instance_override: str | None = None,
) -> Path:
    """Write report.md, latency_vs_throughput.png, throughput_by_batch.png and merged.json; return report.md.

    Each file's environment names its instance type; a file without one is shown by hostname and
    priced only when instance_override names the instance it ran on. prices defaults to the
    built-in on-demand table.
    """
    if not result_paths:
        raise InputFileError("write_report needs at least one result file; got none")
    if prices is None:
        prices = load_prices(None)
    machines = [_machine(Path(p), read_result(p), instance_override) for p in result_paths]
    items = []
    for m in machines:
        price = prices.price(m.instance_type)
        items += [ReportRow(row, m, price, _cost(row.throughput_avg, price)) for row in m.result.rows]
    if not items:
        failed = [f"{f['engine']}: {f['error']}" for m in machines for f in m.result.failures]
        raise InputFileError(f"no benchmark rows in {', '.join(str(p) for p in result_paths)}: nothing to report"
                             + (f" (failed engines: {'; '.join(failed)})" if failed else ""))
    slo = _slo_entries(machines, prices)
    created = utc_now()

    lines = ["# neuron-encoder benchmark report", "",
             f"Made {created} from {len(machines)} result file(s).", ""]
    lines += _machine_lines(machines)
    lines += _results_lines(items, prices)
    lines += _cpu_best_lines(items)
    lines += _slo_lines(slo)
    lines += _failure_lines(machines)
    lines += _published_lines(prices)
    lines += ["", "Plots: [latency against throughput](latency_vs_throughput.png), "
              "[throughput by batch size](throughput_by_batch.png). Data: [merged.json](merged.json).", ""]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot_latency_vs_throughput(items, out_dir / "latency_vs_throughput.png")
    _plot_throughput_by_batch(items, out_dir / "throughput_by_batch.png")
    merged = _merged(created, machines, items, slo, prices)
    atomic_write_bytes(out_dir / "merged.json", (json.dumps(merged, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    report_path = out_dir / "report.md"
    atomic_write_bytes(report_path, "\n".join(lines).encode("utf-8"))
    return report_path

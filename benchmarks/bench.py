"""Run every benchmark a config file lists, then one report over them:
`python benchmarks/bench.py benchmarks/configs/cpu-quick.json`.

A config is a JSON object {"out_dir": "...", "runs": [{...}, ...]} whose run keys are run_bench's
keyword arguments (model, backends, batch_sizes, seq_lens, concurrency, rates, duration_s, calls,
warmup, slo_p99_ms, slo_search, artifacts, artifacts_dir, arrival, open_workers, seed), plus the
Neuron compile options target, auto_cast, auto_cast_type, optlevel and a free-text note.
No logic lives here: each run is one run_bench call, the report one write_report call.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from neuron_encoder.backends import CompileOptions
from neuron_encoder.bench.api import run_bench
from neuron_encoder.bench.report import format_summary_table, write_report
from neuron_encoder.bench.targets import NEURON_BENCH_OPTIONS
from neuron_encoder.errors import ConfigError, NeuronEncoderError

OPTION_KEYS = {"target", "auto_cast", "auto_cast_type", "optlevel"}
RUN_KEYS = {"model", "backends", "batch_sizes", "seq_lens", "concurrency", "rates", "duration_s", "calls", "warmup",
            "slo_p99_ms", "slo_search", "artifacts", "artifacts_dir", "arrival", "open_workers", "seed",
            "note"} | OPTION_KEYS


def run(config_path: Path, out_dir: Path | None = None) -> Path:
    """Every run of the config, then the report; returns report.md."""
    try:
        config = json.loads(config_path.read_text())
        runs = config["runs"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{config_path}: not a bench config with a 'runs' list ({exc})") from exc
    out_dir = out_dir or Path(config.get("out_dir", "bench-results"))
    results = []
    for i, settings in enumerate(runs, 1):
        unknown = set(settings) - RUN_KEYS
        if unknown:
            raise ConfigError(f"{config_path} run {i}: unknown keys {sorted(unknown)}")
        print(f"== run {i}/{len(runs)}: {settings.get('model', 'minilm')} {settings.get('note', '')}", flush=True)
        options = {k: settings[k] for k in OPTION_KEYS if k in settings}
        kwargs = {k: v for k, v in settings.items() if k not in OPTION_KEYS | {"note"}}
        command = f"python benchmarks/bench.py {shlex.quote(str(config_path))} (run {i}: {json.dumps(settings)})"
        neuron_options = CompileOptions(**options) if options else NEURON_BENCH_OPTIONS
        result, path = run_bench(**kwargs, neuron_options=neuron_options, out_dir=out_dir, command=command,
                                 progress=lambda line: print(line, flush=True))
        print(format_summary_table(result.rows), flush=True)
        results.append(path)
    return write_report(results, out_dir / "report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--out-dir", type=Path, help="override the config's out_dir")
    args = parser.parse_args()
    try:
        print(f"report: {run(args.config, args.out_dir)}")
    except NeuronEncoderError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()

"""Run every benchmark a config file lists, then one report over them:
`python benchmarks/bench.py benchmarks/configs/cpu-quick.json`.

A config is a JSON object {"out_dir": "...", "runs": [{...}, ...]} whose run keys are run_bench's
keyword arguments (model, engines, batch_sizes, seq_lens, concurrency, rates, duration_s, calls,
warmup, slo_p99_ms, slo_search, artifacts, artifacts_dir, arrival, open_workers, seed), plus the
Neuron compile options target, auto_cast, auto_cast_type, optlevel, compiler_args (the same defaults
as `neuron-encoder bench`) and a free-text note. No logic lives here: each run is one run_bench
call, the report one write_report call.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from neuron_encoder.bench.api import run_bench
from neuron_encoder.bench.report import format_summary_table, write_report
from neuron_encoder.errors import run_main
from neuron_encoder.options import COMPILE_OPTION_KEYS, load_config, split_job

RUN_KEYS = {"model", "engines", "batch_sizes", "seq_lens", "concurrency", "rates", "duration_s", "calls", "warmup",
            "slo_p99_ms", "slo_search", "artifacts", "artifacts_dir", "arrival", "open_workers", "seed",
            *COMPILE_OPTION_KEYS}


def run(config_path: Path, out_dir: Path | None = None) -> Path:
    """Every run of the config, then the report; returns report.md."""
    config, runs = load_config(config_path, "runs", RUN_KEYS)
    out_dir = out_dir or Path(config.get("out_dir", "bench-results"))
    results = []
    for i, settings in enumerate(runs, 1):
        print(f"== run {i}/{len(runs)}: {settings.get('model', 'minilm')} {settings.get('note', '')}", flush=True)
        neuron_options, _, kwargs = split_job(settings)
        kwargs.pop("note", None)
        command = f"python benchmarks/bench.py {shlex.quote(str(config_path))} (run {i}: {json.dumps(settings)})"
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
    run_main(lambda: print(f"report: {run(args.config, args.out_dir)}"))


if __name__ == "__main__":
    main()

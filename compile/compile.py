"""Compile every model a config file lists: `python compile/compile.py compile/configs/minilm-inf2.json`.

A config is a JSON object {"jobs": [{...}, ...]} whose job keys are the options of
`neuron-encoder compile` (model, batch_sizes, seq_lens, lengths_from, max_buckets, backend, target,
auto_cast, auto_cast_type, optlevel, compiler_args, max_abs, min_cosine, out, force) and a free-text note. No logic lives here:
each job is one compile_model call.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import run_main
from neuron_encoder.options import COMPILE_OPTION_KEYS, TOLERANCE_KEYS, load_config, split_job
from neuron_encoder.weights import DEFAULT_MODEL

JOB_KEYS = {"model", "batch_sizes", "seq_lens", "lengths_from", "max_buckets", "backend", "out", "force",
            *COMPILE_OPTION_KEYS, *TOLERANCE_KEYS}


def run(config_path: Path, backend_override: str | None = None, force: bool = False) -> list[Path]:
    _, jobs = load_config(config_path, "jobs", JOB_KEYS)
    written = []
    for i, job in enumerate(jobs, 1):
        print(f"== job {i}/{len(jobs)}: {job.get('model', DEFAULT_MODEL)} {job.get('note', '')}", flush=True)
        options, tolerance, rest = split_job(job)
        given = {key: rest[key] for key in JOB_KEYS & set(rest) if key != "force"}  # compile_model has the defaults
        if backend_override:
            given["backend"] = backend_override
        result = compile_model(**given, options=options, tolerance=tolerance, force=force or rest.get("force", False),
                               progress=lambda line: print(line, flush=True))
        written.append(result.path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--backend", help="override every job's backend (e.g. cpu to try a config here)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()

    def body() -> None:
        for config in args.configs:
            for path in run(config, args.backend, args.force):
                print(f"artifact: {path}")
    run_main(body)


if __name__ == "__main__":
    main()

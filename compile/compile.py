"""Compile every model a config file lists: `python compile/compile.py compile/configs/minilm-inf2.json`.

A config is a JSON object {"jobs": [{...}, ...]} whose job keys are the options of
`neuron-encoder compile` (model, batch_sizes, seq_lens, backend, target, auto_cast, auto_cast_type,
optlevel, compiler_args, out, force). No logic lives here: each job is one compile_model call.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from neuron_encoder.backends import CompileOptions
from neuron_encoder.compiler import compile_model
from neuron_encoder.errors import ConfigError, NeuronEncoderError

OPTION_KEYS = {"target", "auto_cast", "auto_cast_type", "optlevel"}
JOB_KEYS = {"model", "batch_sizes", "seq_lens", "backend", "out", "force", "compiler_args", "note"} | OPTION_KEYS


def run(config_path: Path, backend_override: str | None = None, force: bool = False) -> list[Path]:
    try:
        jobs = json.loads(config_path.read_text())["jobs"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{config_path}: not a compile config with a 'jobs' list ({exc})") from exc
    written = []
    for i, job in enumerate(jobs, 1):
        unknown = set(job) - JOB_KEYS
        if unknown:
            raise ConfigError(f"{config_path} job {i}: unknown keys {sorted(unknown)}")
        print(f"== job {i}/{len(jobs)}: {job.get('model', 'minilm')} {job.get('note', '')}", flush=True)
        options = CompileOptions(**{k: job[k] for k in OPTION_KEYS if k in job},
                                 extra_args=tuple(shlex.split(job.get("compiler_args", ""))))
        result = compile_model(job.get("model", "minilm"), batch_sizes=job.get("batch_sizes", "1"),
                               seq_lens=job.get("seq_lens", "128"),
                               backend=backend_override or job.get("backend", "auto"), options=options,
                               out=job.get("out"), force=force or job.get("force", False),
                               progress=lambda line: print(line, flush=True))
        written.append(result.path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--backend", help="override every job's backend (e.g. cpu to try a config here)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    try:
        for config in args.configs:
            for path in run(config, args.backend, args.force):
                print(f"artifact: {path}")
    except NeuronEncoderError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()

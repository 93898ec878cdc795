"""run_bench: the library function behind `neuron-encoder bench`.

Load the model, build the targets for the backends asked for, sweep them with realistic inputs,
search the SLO capacity if asked, and write the versioned result (JSON + CSV) with its environment.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from neuron_encoder.backends import CompileOptions
from neuron_encoder.bench.environment import collect_environment
from neuron_encoder.bench.results import BenchResult, write_result
from neuron_encoder.bench.runner import Sweep, make_reference, run_sweep
from neuron_encoder.bench.targets import NEURON_BENCH_OPTIONS, plan_targets, resolve_backends
from neuron_encoder.bench.workload import make_workload
from neuron_encoder.errors import ConfigError
from neuron_encoder.model import Encoder
from neuron_encoder.text import Tokenizer, load_tokenizer
from neuron_encoder.weights import load_model as load_weights

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

REFERENCE_ROWS = 8  # texts in the fixed accuracy sample


def load_model(model: str | Path | Encoder, seed: int = 0) -> tuple[Encoder, str, Tokenizer | None]:
    """(encoder, model id, tokenizer or None) for a checkpoint ('minilm', a directory, a hub id), a
    `random:PRESET` (seeded random weights, no tokenizer), or an Encoder already built."""
    encoder = model.eval() if isinstance(model, Encoder) else load_weights(model, seed=seed)
    model_id = str(getattr(encoder, "name_or_path", "custom"))
    tokenizer = load_tokenizer(encoder) if getattr(encoder, "checkpoint_dir", None) else None
    return encoder, model_id, tokenizer


def _describe_call(**arguments: Any) -> str:
    return "run_bench(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")"


def result_file_name(environment: dict[str, Any], created: datetime) -> str:
    """bench-<instance type or host>-<UTC time>.json: several machines' files sort and do not clash."""
    where = environment.get("instance_type") or environment.get("hostname") or socket.gethostname()
    where = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(where))
    return f"bench-{where}-{created.strftime('%Y%m%dT%H%M%SZ')}.json"


def run_bench(model: str | Path | Encoder = "minilm", *, backends: str | Sequence[str] = ("auto",),
              batch_sizes: str | Sequence[int] = (1, 8), seq_lens: str | Sequence[int] = (128,),
              concurrency: str | Sequence[int] = (1, 2), rates: str | Sequence[float] | None = None,
              duration_s: float | None = 5.0, calls: int | None = None, warmup: int = 3,
              out_dir: str | Path = "bench-results", slo_p99_ms: float | None = None,
              slo_search: str = "concurrency", artifacts: Sequence[str | Path] = (),
              artifacts_dir: str | Path | None = None, neuron_options: CompileOptions = NEURON_BENCH_OPTIONS,
              arrival: str = "poisson", open_workers: int | None = None, seed: int = 0,
              command: str | None = None, progress: Progress | None = log.info) -> tuple[BenchResult, Path]:
    """Benchmark `model` on `backends` over batch_sizes x seq_lens x concurrency (and open-loop `rates`);
    write <out_dir>/bench-<machine>-<time>.json and .csv; return the result and the JSON path.

    backends: names or families from targets.resolve_backends ("auto", "cpu", "cuda", "neuron",
    "cpu-eager", "cpu-torchscript-fp32", ...). artifacts: existing artifact directories to include
    (they replace compiling the same target). Each configuration runs `warmup` calls per worker,
    then duration_s seconds or `calls` calls, whichever ends first. slo_p99_ms: also search each
    target's best throughput within that p99 (by concurrency, or by open-loop rate).
    command: the exact command line to record (the CLI passes its argv); default a description of
    this call. Bad input raises ConfigError before anything is compiled or run.
    """
    say = progress or (lambda message: None)
    sweep = Sweep(batch_sizes=batch_sizes, seq_lens=seq_lens, concurrency=concurrency, rates=rates,
                  duration_s=duration_s, calls=calls, warmup=warmup, open_workers=open_workers,
                  arrival=arrival, seed=seed)
    if slo_search not in ("concurrency", "rate"):
        raise ConfigError(f"unknown capacity search {slo_search!r}; choose concurrency or rate")
    if slo_p99_ms is not None and (isinstance(slo_p99_ms, bool) or not isinstance(slo_p99_ms, (int, float))
                                   or not slo_p99_ms > 0):
        raise ConfigError(f"the p99 SLO must be a positive number of ms, got {slo_p99_ms!r}")
    if isinstance(artifacts, (str, Path)):
        artifacts = [artifacts]
    names = [backends] if isinstance(backends, str) else list(backends)
    kinds = resolve_backends(names, progress=say) if names or not artifacts else []
    if command is None:
        command = _describe_call(model=str(getattr(model, "name_or_path", model)), backends=names,
                                 batch_sizes=list(sweep.batch_sizes), seq_lens=list(sweep.seq_lens),
                                 concurrency=list(sweep.concurrency), rates=list(sweep.rates),
                                 duration_s=duration_s, calls=calls, warmup=warmup, slo_p99_ms=slo_p99_ms,
                                 artifacts=[str(a) for a in artifacts])

    encoder, model_id, tokenizer = load_model(model, seed)
    positions = encoder.config.max_position_embeddings
    if max(sweep.seq_lens) > positions:
        raise ConfigError(f"sequence length {max(sweep.seq_lens)} is longer than {model_id}'s {positions} positions")
    say(f"model {model_id}: {encoder.get_num_params():,} parameters; inputs: "
        f"{'its tokenizer on a built-in English corpus' if tokenizer else 'random tokens, log-normal lengths'}")
    targets = plan_targets(encoder, kinds, sweep.batch_sizes, sweep.seq_lens, model_id=model_id,
                           artifacts=artifacts, artifacts_dir=artifacts_dir, neuron_options=neuron_options,
                           progress=say)
    sample = make_workload(encoder.config, tokenizer, REFERENCE_ROWS, max(sweep.seq_lens), pool=1,
                           seed=seed + 1).batches[0]
    reference = make_reference(encoder, sample)

    rows, slo = run_sweep(targets, sweep, lambda b, s: make_workload(encoder.config, tokenizer, b, s, seed=seed),
                          model=model_id, reference=reference, slo_p99_ms=slo_p99_ms, slo_search=slo_search,
                          progress=say)

    hashes = {row.backend: row.artifact_sha256 for row in rows if row.artifact_sha256}
    environment = collect_environment(command, next(iter(hashes.values())) if len(hashes) == 1 else None)
    environment["artifacts"] = hashes  # target -> manifest sha256: the field above holds one only
    environment["torch_threads"] = torch.get_num_threads()
    result = BenchResult(command=command, environment=environment, rows=rows, slo=slo)
    created = datetime.strptime(result.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    json_path, csv_path = write_result(result, Path(out_dir) / result_file_name(environment, created))
    say(f"results written: {json_path} and {csv_path.name}")
    return result, json_path

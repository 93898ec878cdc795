"""run_bench: the library function behind `neuron-encoder bench`.

Resolve the model, build the engines asked for, sweep them with realistic inputs, search the SLO
capacity if asked, and write the versioned result (JSON + CSV) with its environment.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from neuron_encoder.backends import CompileOptions
from neuron_encoder.bench import checks
from neuron_encoder.bench.accuracy import make_reference
from neuron_encoder.bench.endpoints import endpoint_engines
from neuron_encoder.bench.environment import collect_environment
from neuron_encoder.bench.results import BenchResult, write_result
from neuron_encoder.bench.sweep import Sweep, run_sweep
from neuron_encoder.bench.engines import plan_engines, resolve_engines
from neuron_encoder.bench.workload import make_workload
from neuron_encoder.compiler import DEFAULT_ARTIFACTS_DIR
from neuron_encoder.errors import BenchmarkFailed, ConfigError
from neuron_encoder.files import safe_name, utc_stamp
from neuron_encoder.model import Encoder
from neuron_encoder.models import ResolvedModel, load_model
from neuron_encoder.threads import cpu_budget
from neuron_encoder.weights import DEFAULT_MODEL

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

REFERENCE_ROWS = 8  # texts in the fixed accuracy sample


def _task(resolved: ResolvedModel) -> tuple[str, bool]:
    """The model's task, and whether its inputs are pairs (a reranker is timed in pairs/s)."""
    task = resolved.task.kind
    return task, task == "reranker"


def _describe_call(sweep: Sweep, **arguments: Any) -> str:
    """The command to record for a library call: run_bench(...) with its arguments, sweep spelled out."""
    arguments.update(batch_sizes=list(sweep.batch_sizes), seq_lens=list(sweep.seq_lens),
                     concurrency=list(sweep.concurrency), rates=list(sweep.rates), duration_s=sweep.duration_s,
                     calls=sweep.calls, warmup=sweep.warmup)
    return "run_bench(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")"


def result_file_name(environment: dict[str, Any], created: str) -> str:
    """bench-<instance type or host>-<UTC time>.json: several machines' files sort and do not clash."""
    where = environment.get("instance_type") or environment.get("hostname") or socket.gethostname()
    return f"bench-{safe_name(str(where))}-{utc_stamp(created)}.json"


def _write(outcome, command: str, out_dir: str | Path) -> tuple[BenchResult, Path]:
    """The result with its environment, as <out_dir>/bench-<machine>-<time>.json and .csv."""
    hashes = {row.engine: row.artifact_sha256 for row in outcome.rows if row.artifact_sha256}
    environment = collect_environment(command, next(iter(hashes.values())) if len(hashes) == 1 else None)
    environment["artifacts"] = hashes  # engine -> manifest sha256: the field above holds one only
    environment["torch_threads"] = cpu_budget()
    result = BenchResult(command=command, environment=environment, rows=outcome.rows, slo=outcome.slo,
                         failures=outcome.failures)
    json_path, _ = write_result(result, Path(out_dir) / result_file_name(environment, result.created))
    return result, json_path


def run_bench(model: str | Path | Encoder | ResolvedModel = DEFAULT_MODEL, *, engines: str | Sequence[str] = ("auto",),
              batch_sizes: str | Sequence[int] = (1, 8), seq_lens: str | Sequence[int] = (128,),
              concurrency: str | Sequence[int] = (1, 2), rates: str | Sequence[float] | None = None,
              duration_s: float | None = 5.0, calls: int | None = None, warmup: int = 3,
              out_dir: str | Path = "bench-results", slo_p99_ms: float | None = None,
              slo_search: str = "concurrency", artifacts: Sequence[str | Path] = (),
              artifacts_dir: str | Path = DEFAULT_ARTIFACTS_DIR, neuron_options: CompileOptions = CompileOptions(),
              arrival: str = "poisson", open_workers: int | None = None, seed: int = 0,
              endpoints: Sequence[str] = (), endpoint_kind: str = "openai",
              command: str | None = None, progress: Progress | None = log.info) -> tuple[BenchResult, Path]:
    """Benchmark `model` on `engines` over batch_sizes x seq_lens x concurrency (and open-loop `rates`);
    write <out_dir>/bench-<machine>-<time>.json and .csv; return the result and the JSON path.

    engines: names or families from engines.resolve_engines ("auto", "cpu", "cuda", "neuron",
    "cpu-eager", "cpu-artifact-fp32", ...). artifacts: existing artifact directories to include
    (they replace compiling the same engine). Each configuration runs `warmup` calls per worker,
    then duration_s seconds or `calls` calls, whichever ends first. slo_p99_ms: also search each
    engine's best throughput within that p99 (by concurrency, or by open-loop rate).
    neuron_options: how Neuron engines are compiled (auto_cast="auto": AWS's published setting).
    endpoints: endpoints to time beside the engines (bench/endpoints.py; a scorer's on its scoring route): URLs
    of `endpoint_kind` (openai, tei, sagemaker), or SageMaker endpoint names with kind "sagemaker"; the API key, if
    one is needed, comes from NEURON_ENCODER_API_KEY.
    command: the exact command line to record (the CLI passes its argv); default a description of
    this call. Bad input raises ConfigError before anything is compiled or run. An engine that fails
    is reported and left out; the result is still written, then BenchmarkFailed names the failures.
    """
    say = progress or (lambda message: None)
    sweep = Sweep(batch_sizes=batch_sizes, seq_lens=seq_lens, concurrency=concurrency, rates=rates,
                  duration_s=duration_s, calls=calls, warmup=warmup, open_workers=open_workers,
                  arrival=arrival, seed=seed)
    checks.choice("capacity search", slo_search, checks.SLO_SEARCHES)
    checks.slo_ms(slo_p99_ms)
    artifacts = [artifacts] if isinstance(artifacts, (str, Path)) else list(artifacts)
    names = [engines] if isinstance(engines, str) else list(engines)
    kinds = resolve_engines(names, progress=say) if names or not (artifacts or endpoints) else []
    resolved = model if isinstance(model, ResolvedModel) else load_model(model, seed)
    encoder, model_id, tokenizer = resolved.encoder, resolved.model_id, resolved.tokenizer
    task, pairs = _task(resolved)
    command = command or _describe_call(model=model_id, engines=names, sweep=sweep, slo_p99_ms=slo_p99_ms,
                                        artifacts=[str(a) for a in artifacts], endpoints=list(endpoints))
    encoder.config.check_sequence_length(max(sweep.seq_lens))
    say(f"model {model_id} ({task}): {encoder.get_num_params():,} parameters; inputs: "
        f"{'its tokenizer on a built-in English corpus' if tokenizer else 'random tokens, log-normal lengths'}")
    planned = plan_engines(resolved, kinds, sweep.batch_sizes, sweep.seq_lens, artifacts=artifacts,
                           artifacts_dir=artifacts_dir, neuron_options=neuron_options,
                           progress=say) if kinds or artifacts else []
    planned += endpoint_engines(list(endpoints), endpoint_kind, tokenizer, model_id,
                                os.environ.get("NEURON_ENCODER_API_KEY"), task=resolved.task)
    workload = functools.partial(make_workload, encoder.config, tokenizer, pairs=pairs)
    sample = workload(REFERENCE_ROWS, max(sweep.seq_lens), pool=1, seed=seed + 1).batches[0]
    outcome = run_sweep(planned, sweep, lambda b, s: workload(b, s, seed=seed),
                        model=model_id, reference=make_reference(encoder, sample, task), slo_p99_ms=slo_p99_ms,
                        slo_search=slo_search, progress=say)

    result, json_path = _write(outcome, command, out_dir)
    say(f"results written: {json_path} and {json_path.with_suffix('.csv').name}")
    if outcome.failures:
        raise BenchmarkFailed(f"{len(outcome.failures)} engine(s) failed (the others' rows are in {json_path}): "
                              + "; ".join(f"{f['engine']}: {f['error']}" for f in outcome.failures))
    return result, json_path

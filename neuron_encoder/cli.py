"""A thin command line over the library: every command calls one library function and prints."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from datetime import date
from pathlib import Path
from typing import List, Optional

import typer

from .deploy.commands import deploy_app
from .errors import run_main
from .backends import CompileOptions
from .numerics import Tolerance
from .weights import DEFAULT_MODEL

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compile and benchmark a BERT-style encoder on AWS Inferentia2/Trainium, "
                       "with CPU and CUDA fallbacks.")

app.add_typer(deploy_app, name="deploy")

MODEL_HELP = ("checkpoint directory, Hugging Face hub id, 'minilm' (all-MiniLM-L6-v2, shipped), "
              "or random:PRESET (e.g. random:bert-base, random weights for speed work)")
AUTO_CAST_HELP = ("auto | none | matmult | all (neuronx-cc's names). auto: bf16 matmuls on Neuron, fp16 on "
                  "CUDA, bf16 on CPUs with native bf16 (AMX, AVX512-BF16) and fp32 on other CPUs; none: fp32. "
                  "On CPU and CUDA a cast applies to the whole model (matmult = all)")


def _default(name: str, owner: type | None = None) -> str:
    """The default of a field of `owner` (ServeSettings) for an option's help: the dataclass holds it."""
    from .serve.settings import ServeSettings
    return f" (default {getattr(owner or ServeSettings, name)})"


def _given(options: dict) -> dict:
    """The options a user gave: the rest are left to the defaults of what they are passed to."""
    return {name: value for name, value in options.items() if value is not None}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    run_main(app)


@app.command()
def params(preset: str = typer.Option("bert-base", help="named config preset"),
           as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Parameter count per component (embeddings, attention, feed-forward, layer, total)."""
    from .config import preset as get_preset
    from .params import breakdown, format_table
    config = get_preset(preset)
    counts = breakdown(config)
    typer.echo(json.dumps(counts, indent=2) if as_json else format_table(preset, config, counts))


@app.command()
def embed(texts: List[str] = typer.Argument(..., help="texts to embed"),
          model: str = typer.Option(DEFAULT_MODEL, help="checkpoint directory, Hugging Face hub id or 'minilm' "
                                                   "(a model with a tokenizer; random:PRESET has none)"),
          similarity: bool = typer.Option(False, "--similarity", help="print the cosine-similarity matrix")) -> None:
    """Embed texts with a real checkpoint; print JSON embeddings or their similarity matrix."""
    from .embeddings import cosine_matrix, embed_model_texts
    vectors = embed_model_texts(model, texts)
    if similarity:
        out = {"texts": texts, "similarity": [[round(x, 6) for x in row] for row in cosine_matrix(vectors).tolist()]}
    else:
        out = {"model": model, "dim": vectors.shape[1],
               "embeddings": [[round(x, 7) for x in row] for row in vectors.tolist()]}
    typer.echo(json.dumps(out))


SCORER_MODEL_HELP = "a classifier or reranker checkpoint: a directory or a Hugging Face hub id"
TRUNCATION_HELP = "which end of an input over the limit is cut: right | left"


@app.command()
def classify(texts: List[str] = typer.Argument(..., help="texts to classify; with --pairs, taken two at a time"),
             model: Optional[str] = typer.Option(None, help=SCORER_MODEL_HELP),
             artifact: Optional[str] = typer.Option(None, help="or a compiled artifact of one"),
             pairs: bool = typer.Option(False, "--pairs", help="score (TEXT1, TEXT2), (TEXT3, TEXT4), ... as pairs"),
             raw_scores: bool = typer.Option(False, "--raw-scores", help="the logits, not the scores"),
             truncation_direction: str = typer.Option("right", help=TRUNCATION_HELP)) -> None:
    """Every label's score for each text (or pair), highest first, as JSON."""
    from .classification import classify as run_classify, load_scorer
    from .errors import ConfigError
    if pairs and len(texts) % 2:
        raise ConfigError(f"--pairs takes an even number of texts, not {len(texts)}")
    inputs = [texts[i:i + 2] for i in range(0, len(texts), 2)] if pairs else texts
    predictions = run_classify(load_scorer(model, artifact), inputs, raw_scores=raw_scores,
                               direction=truncation_direction)
    typer.echo(json.dumps({"model": model or artifact, "inputs": inputs, "predictions": predictions}))


@app.command()
def rerank(query: str = typer.Argument(..., help="the query, never cut"),
           texts: List[str] = typer.Argument(..., help="the texts to rank against it"),
           model: Optional[str] = typer.Option(None, help=SCORER_MODEL_HELP),
           artifact: Optional[str] = typer.Option(None, help="or a compiled artifact of one"),
           raw_scores: bool = typer.Option(False, "--raw-scores", help="the logits, not the scores"),
           truncation_direction: str = typer.Option("right", help=TRUNCATION_HELP)) -> None:
    """The texts ranked by relevance to the query, highest first, as JSON."""
    from .classification import load_scorer, rerank as run_rerank
    results = run_rerank(load_scorer(model, artifact), query, texts, raw_scores=raw_scores,
                         direction=truncation_direction)
    typer.echo(json.dumps({"model": model or artifact, "query": query,
                           "results": [result | {"text": texts[result["index"]]} for result in results]}))


@app.command()
def quickstart(model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP),
               run_dir: Optional[str] = typer.Option(None, help="where results and the report go "
                                                                "(default runs/quickstart-<time>)"),
               duration: float = typer.Option(2.0, help="seconds measured per configuration"),
               bench: bool = typer.Option(True, help="--no-bench: only the model summary and similarities")) -> None:
    """The main job: the model, then compile for the best backend here, numerics, benchmark, report."""
    from .quickstart import run_quickstart
    run_quickstart(model, run_dir=run_dir, duration_s=duration, bench=bench, echo=typer.echo)


@app.command("compile")
def compile_command(
    model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP),
    batch_sizes: Optional[str] = typer.Option(None, help="comma-separated batch sizes, one bucket each (default 1)"),
    seq_lens: Optional[str] = typer.Option(None, help="comma-separated sequence lengths, one bucket each (default "
                                                      "128); auto: the lengths that fit --lengths-from's texts, "
                                                      "or 32,64,128,256,512"),
    lengths_from: Optional[str] = typer.Option(None, help="with --seq-lens auto: a text file, one text per line, "
                                                          "whose token lengths choose the buckets"),
    max_buckets: Optional[int] = typer.Option(None, help="with --seq-lens auto and --lengths-from: at most this many"
                                                         " (default 4)"),
    backend: Optional[str] = typer.Option(None, help="auto | cpu | cuda | neuron (default auto)"),
    target: Optional[str] = typer.Option(None, help="Neuron target: inf2 | trn1 | trn1n | trn2"),
    auto_cast: Optional[str] = typer.Option(None, help=AUTO_CAST_HELP + _default("auto_cast", CompileOptions)),
    auto_cast_type: Optional[str] = typer.Option(None, help="bf16 | fp16 | tf32 | fp8_e4m3 (with matmult or all)"
                                                 + _default("auto_cast_type", CompileOptions)),
    optlevel: Optional[int] = typer.Option(None, help="neuronx-cc --optlevel 1, 2 or 3"
                                           + _default("optlevel", CompileOptions)),
    compiler_args: Optional[str] = typer.Option(None, help="extra neuronx-cc flags, passed through verbatim"),
    lnc: Optional[int] = typer.Option(None, help="logical NeuronCore config (neuronx-cc --logical-nc-config): "
                                                 "1 or 2 on trn2 (default 2; run with the same "
                                                 "NEURON_LOGICAL_NC_CONFIG), only 1 on inf2/trn1"),
    out: Optional[str] = typer.Option(None, help="artifact directory (default: artifacts/<model>-<backend>-...)"),
    force: bool = typer.Option(False, "--force", help="recompile even if a matching artifact exists"),
    max_abs: Optional[float] = typer.Option(None, help="numerics gate for fp32: max abs error"
                                            + _default("max_abs", Tolerance)),
    min_cosine: Optional[float] = typer.Option(None, help="numerics gate for cast precisions: min cosine"
                                               + _default("min_cosine", Tolerance)),
) -> None:
    """Compile a model into static-shape buckets, check numerics, write a verified artifact.

    \f
    An option not given is left to compile_model, CompileOptions and Tolerance, which hold the defaults.
    """
    from .compiler import compile_model
    from .options import compile_options
    casts = dict(target=target, auto_cast=auto_cast, auto_cast_type=auto_cast_type, optlevel=optlevel,
                 compiler_args=compiler_args, lnc=lnc)
    gate = dict(max_abs=max_abs, min_cosine=min_cosine)
    given = dict(batch_sizes=batch_sizes, seq_lens=seq_lens, backend=backend, out=out, lengths_from=lengths_from,
                 max_buckets=max_buckets)
    result = compile_model(model, options=compile_options(**_given(casts)), tolerance=Tolerance(**_given(gate)),
                           force=force, progress=typer.echo, **_given(given))
    typer.echo(json.dumps({"artifact": str(result.path), "cache_hit": result.cache_hit, "task": result.manifest["task"],
                           "backend": result.manifest["backend"], "precision": result.manifest["precision"],
                           "bucket_choice": result.manifest.get("bucket_choice"),
                           "buckets": [{k: b[k] for k in ("name", "compile_seconds")} | b["numerics"]
                                       for b in result.manifest["buckets"]]}, indent=2))


@app.command()
def bench(
    model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP),
    engines: Optional[str] = typer.Option(None, help="what to time: auto, families (cpu, cuda, neuron) or engines "
                                                     "(cpu-eager, cpu-artifact-fp32, cuda-eager-fp16, "
                                                     "neuron-1core, ...); default auto, none with --endpoint"),
    batch_sizes: Optional[str] = typer.Option(None, help="comma-separated batch sizes (default 1,8)"),
    seq_lens: Optional[str] = typer.Option(None, help="comma-separated sequence lengths (default 128)"),
    concurrency: Optional[str] = typer.Option(None, help="closed-loop worker counts (default 1,2)"),
    rates: Optional[str] = typer.Option(None, help="open-loop request rates per second, e.g. 50,100"),
    duration: Optional[float] = typer.Option(None, help="seconds measured per configuration (warm-up excluded; "
                                                        "default 5)"),
    warmup: Optional[int] = typer.Option(None, help="warm-up calls per worker, not measured (default 3)"),
    slo_p99_ms: Optional[float] = typer.Option(None, help="find the highest throughput whose p99 stays under this"),
    artifact: List[str] = typer.Option([], help="benchmark this compiled artifact instead of compiling"),
    target: Optional[str] = typer.Option(None, help="Neuron target when compiling for Neuron"),
    auto_cast: Optional[str] = typer.Option(None, help="Neuron auto-cast; auto: as AWS measured its published "
                                                       "numbers (matmult, bf16, --disable-mixed-precision-"
                                                       "accumulation); else none | matmult | all"
                                                       + _default("auto_cast", CompileOptions)),
    auto_cast_type: Optional[str] = typer.Option(None, help="Neuron auto-cast type"
                                                 + _default("auto_cast_type", CompileOptions)),
    out_dir: Optional[str] = typer.Option(None, help="where the JSON and CSV results go (default bench-results)"),
    endpoint: List[str] = typer.Option([], help="also time this endpoint (repeatable): a URL, or a "
                                                "SageMaker endpoint name with --endpoint-kind sagemaker"),
    endpoint_kind: Optional[str] = typer.Option(None, help="openai (/v1/embeddings) | tei (/embed; a classifier's or "
                                                           "reranker's /predict) | sagemaker (/invocations, or "
                                                           "invoke_endpoint by name; default openai)"),
) -> None:
    """Benchmark eager and compiled engines, and embedding endpoints: latency, throughput, accuracy.

    \f
    An option not given is left to run_bench and CompileOptions, which hold the defaults.
    """
    from .bench.api import run_bench
    from .bench.report import format_cpu_best, format_summary_table
    from .options import compile_options
    given = dict(endpoint_kind=endpoint_kind, batch_sizes=batch_sizes, seq_lens=seq_lens, concurrency=concurrency,
                 duration_s=duration, warmup=warmup, out_dir=out_dir)
    casts = dict(target=target, auto_cast=auto_cast, auto_cast_type=auto_cast_type)
    result, path = run_bench(model, engines=engines if engines is not None else ([] if endpoint else "auto"),
                             endpoints=endpoint, rates=rates, slo_p99_ms=slo_p99_ms, artifacts=artifact,
                             neuron_options=compile_options(**_given(casts)), **_given(given),
                             command=shlex.join(["neuron-encoder", *sys.argv[1:]]),
                             progress=lambda line: typer.echo(line, err=True))
    typer.echo(format_summary_table(result.rows))
    if format_cpu_best(result.rows):
        typer.echo(format_cpu_best(result.rows))
    typer.echo(f"results: {path} (and .csv); next: neuron-encoder report {path}")


@app.command()
def report(
    files: List[str] = typer.Argument(..., help="result JSON files, from one or several machines"),
    out_dir: str = typer.Option("report", help="where report.md, the PNG plots and merged.json go"),
    prices: Optional[str] = typer.Option(None, help="price overrides: a JSON/CSV file or 'inf2.xlarge=0.76,...'"),
    live_prices: bool = typer.Option(False, "--live-prices", help="fetch on-demand prices from the AWS Pricing "
                                                                   "API (needs boto3 and credentials)"),
    region: str = typer.Option("us-east-1", help="region for --live-prices"),
    instance: Optional[str] = typer.Option(None, help="instance type for results recorded off EC2"),
) -> None:
    """Merge result files into one Markdown report with plots and cost per million inferences."""
    from .bench.prices import fetch_live_prices, load_prices
    from .bench.report import write_report
    from .bench.results import read_result
    table = load_prices(prices)
    if live_prices:
        types = {read_result(f).environment.get("instance_type") for f in files} | ({instance} - {None})
        live = fetch_live_prices(sorted(t for t in types if t), region=region)
        if live:
            table = table.updated(live, f"AWS Price List API, {region}, fetched {date.today().isoformat()}")
        else:
            typer.echo("live prices unavailable (no boto3 or credentials); using the built-in table", err=True)
    path = write_report([Path(f) for f in files], Path(out_dir), table, instance_override=instance)
    typer.echo(f"report: {path}")


@app.command()
def serve(
    artifact: Optional[str] = typer.Option(None, help="a compiled artifact directory to serve (default under "
                                                      "--sagemaker: SM_MODEL_DIR, /opt/ml/model)"),
    model: Optional[str] = typer.Option(None, help="compile this model on start (through the cache) instead; "
                                                   f"default {DEFAULT_MODEL}. " + MODEL_HELP),
    backend: Optional[str] = typer.Option(None, help="with --model: auto | cpu | cuda | neuron" + _default("backend")),
    batch_sizes: Optional[str] = typer.Option(None, help="with --model: the buckets' batch sizes"
                                              + _default("batch_sizes")),
    seq_lens: Optional[str] = typer.Option(None, help="with --model: the buckets' sequence lengths"
                                           + _default("seq_lens")),
    target: Optional[str] = typer.Option(None, help="with --model: Neuron target inf2 | trn1 | trn1n | trn2"),
    auto_cast: Optional[str] = typer.Option(None, help="with --model: " + AUTO_CAST_HELP
                                            + _default("auto_cast", CompileOptions)),
    auto_cast_type: Optional[str] = typer.Option(None, help="with --model: bf16 | fp16 | tf32 | fp8_e4m3"
                                                 + _default("auto_cast_type", CompileOptions)),
    artifacts_dir: Optional[str] = typer.Option(None, help="with --model: the compile cache"
                                                + _default("artifacts_dir")),
    host: Optional[str] = typer.Option(None, help="address to bind (0.0.0.0 for every interface)" + _default("host")),
    port: Optional[int] = typer.Option(None, help="port to bind" + _default("port")),
    sagemaker: bool = typer.Option(False, "--sagemaker", help="SageMaker container: bind 0.0.0.0 on "
                                   "SAGEMAKER_BIND_TO_PORT (8080), artifact from SM_MODEL_DIR (also when "
                                   "SAGEMAKER_BIND_TO_PORT is set)"),
    workers: Optional[str] = typer.Option(None, help="server processes: N, or auto (one per Neuron device, its "
                                          "cores their own; on the CPU one per core, up to 8)" + " (default auto)"),
    replicas: Optional[int] = typer.Option(None, help="model replicas per worker (default one per NeuronCore or GPU, "
                                                      "one on CPU)"),
    max_batch_tokens: Optional[int] = typer.Option(None, help="padded tokens (batch x bucket length) in one batch"
                                                   + _default("max_batch_tokens")),
    max_batch_requests: Optional[int] = typer.Option(None, help="inputs in one batch (default the largest bucket's)"),
    max_client_batch_size: Optional[int] = typer.Option(None, help="inputs in one request; more is 413"
                                                        + _default("max_client_batch_size")),
    max_concurrent_requests: Optional[int] = typer.Option(None, help="inputs admitted (waiting or computing); more "
                                                          "is 429" + _default("max_concurrent_requests")),
    max_batch_delay_ms: Optional[float] = typer.Option(None, help="wait up to this for a fuller batch (0: run at "
                                                       "once)" + _default("max_batch_delay_ms")),
    request_timeout_ms: Optional[float] = typer.Option(None, help="longest wait for a replica before 503"
                                                       + _default("request_timeout_ms")),
    auto_truncate: bool = typer.Option(False, "--auto-truncate", help="cut inputs longer than the largest "
                                       "bucket unless a request says truncate=false (default: 413)"),
    payload_limit: Optional[int] = typer.Option(None, help="largest request body in bytes; more is 413"
                                                + _default("payload_limit")),
    api_key: Optional[str] = typer.Option(None, help="require 'Authorization: Bearer KEY' on every route but "
                                                     "/ping and /health (or NEURON_ENCODER_API_KEY)"),
    api_key_file: Optional[str] = typer.Option(None, help="read the API key from this file"),
    graceful_timeout: Optional[float] = typer.Option(None, help="seconds to finish accepted requests after SIGTERM"
                                                     + _default("graceful_timeout")),
    json_output: bool = typer.Option(False, "--json-output", help="one JSON log line per request (no bodies)"),
    cors_allow_origin: List[str] = typer.Option([], help="allow browsers from this origin (repeatable; no CORS "
                                                         "unless given)"),
) -> None:
    """Serve over HTTP: SageMaker /invocations, OpenAI /v1/embeddings, TEI /embed (a classifier's /predict, a
    reranker's /rerank and /v1/rerank), /metrics.

    \f
    Long because: one option per server setting, each named as text-embeddings-inference names it. An
    option not given is left to ServeSettings, which holds every default once.
    """
    from .errors import ConfigError
    from .options import compile_options
    try:
        from .serve.settings import ServeSettings, parse_workers
        from .serve.workers import serve as run_server
    except ImportError as exc:
        raise ConfigError(f"the server needs its extra ({exc.name} is missing): "
                          "pip install 'neuron-encoder[serve]'") from None
    given = dict(artifact=artifact, model=model, backend=backend, batch_sizes=batch_sizes, seq_lens=seq_lens,
                 artifacts_dir=artifacts_dir, host=host, port=port, sagemaker=sagemaker, replicas=replicas,
                 workers=parse_workers(workers) if workers is not None else None,
                 max_batch_tokens=max_batch_tokens, max_batch_requests=max_batch_requests,
                 max_client_batch_size=max_client_batch_size, max_concurrent_requests=max_concurrent_requests,
                 max_batch_delay_ms=max_batch_delay_ms, request_timeout_ms=request_timeout_ms,
                 auto_truncate=auto_truncate, payload_limit=payload_limit, api_key=api_key,
                 graceful_timeout=graceful_timeout, json_output=json_output,
                 cors_allow_origin=tuple(cors_allow_origin))
    casts = dict(target=target, auto_cast=auto_cast, auto_cast_type=auto_cast_type)
    run_server(ServeSettings(compile_options=compile_options(**_given(casts)), **_given(given)),
               api_key_file=api_key_file)

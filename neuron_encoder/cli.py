"""A thin command line over the library: every command calls one library function and prints."""

from __future__ import annotations

import json
import logging
import sys
from typing import List, Optional

import typer

from .errors import NeuronEncoderError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compile, benchmark and serve a BERT-style encoder on AWS Inferentia2/Trainium, "
                       "with a CPU fallback.")

MODEL_HELP = ("checkpoint directory, Hugging Face hub id, 'minilm' (all-MiniLM-L6-v2, shipped), "
              "or random:PRESET (e.g. random:bert-base, random weights for speed work)")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        app()
    except NeuronEncoderError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        sys.exit(error.exit_code)


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
          model: str = typer.Option("minilm", help=MODEL_HELP),
          similarity: bool = typer.Option(False, "--similarity", help="print the cosine-similarity matrix")) -> None:
    """Embed texts with a real checkpoint; print JSON embeddings or their similarity matrix."""
    from .embeddings import cosine_matrix, embed_texts
    from .model import Encoder
    vectors = embed_texts(Encoder.from_pretrained(model), texts)
    if similarity:
        out = {"texts": texts, "similarity": [[round(x, 6) for x in row] for row in cosine_matrix(vectors).tolist()]}
    else:
        out = {"model": model, "dim": vectors.shape[1],
               "embeddings": [[round(x, 7) for x in row] for row in vectors.tolist()]}
    typer.echo(json.dumps(out))


@app.command()
def quickstart(model: str = typer.Option("minilm", help=MODEL_HELP)) -> None:
    """The main job: parameter breakdown, then sample embeddings and their similarities."""
    from .quickstart import run_quickstart
    run_quickstart(model, echo=typer.echo)


@app.command("compile")
def compile_command(
    model: str = typer.Option("minilm", help=MODEL_HELP),
    batch_sizes: str = typer.Option("1", help="comma-separated batch sizes, one bucket each"),
    seq_lens: str = typer.Option("128", help="comma-separated sequence lengths, one bucket each"),
    backend: str = typer.Option("auto", help="auto | cpu | cuda | neuron"),
    target: Optional[str] = typer.Option(None, help="Neuron target: inf2 | trn1 | trn1n | trn2"),
    auto_cast: str = typer.Option("none", help="none | matmult | all (neuronx-cc's names)"),
    auto_cast_type: str = typer.Option("bf16", help="bf16 | fp16 | tf32 | fp8_e4m3"),
    optlevel: int = typer.Option(2, help="neuronx-cc --optlevel 1, 2 or 3"),
    compiler_args: str = typer.Option("", help="extra neuronx-cc flags, passed through verbatim"),
    out: Optional[str] = typer.Option(None, help="artifact directory (default: artifacts/<model>-<backend>-...)"),
    force: bool = typer.Option(False, "--force", help="recompile even if a matching artifact exists"),
    max_abs: float = typer.Option(1e-3, help="numerics gate for fp32: max abs error"),
    min_cosine: float = typer.Option(0.999, help="numerics gate for cast precisions: min cosine"),
) -> None:
    """Compile a model into static-shape buckets, check numerics, write a verified artifact."""
    import shlex
    from .backends import CompileOptions
    from .compiler import Tolerance, compile_model
    options = CompileOptions(target=target, auto_cast=auto_cast, auto_cast_type=auto_cast_type,
                             optlevel=optlevel, extra_args=tuple(shlex.split(compiler_args)))
    result = compile_model(model, batch_sizes=batch_sizes, seq_lens=seq_lens, backend=backend,
                           options=options, out=out, force=force,
                           tolerance=Tolerance(max_abs=max_abs, min_cosine=min_cosine), progress=typer.echo)
    typer.echo(json.dumps({"artifact": str(result.path), "cache_hit": result.cache_hit,
                           "backend": result.manifest["backend"], "precision": result.manifest["precision"],
                           "buckets": [{k: b[k] for k in ("name", "compile_seconds")} | b["numerics"]
                                       for b in result.manifest["buckets"]]}, indent=2))

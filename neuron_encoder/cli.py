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

MODEL_HELP = "checkpoint directory, Hugging Face hub id, or 'minilm' (all-MiniLM-L6-v2, shipped)"


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

"""The main job the README opens with, on the embedded default model."""

from __future__ import annotations

from typing import Callable

from .embeddings import cosine_matrix, embed_texts
from .model import Encoder
from .params import breakdown, format_table

SAMPLE_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar on stage.",
    "The new movie is awesome.",
    "The stock market fell sharply on Monday.",
]


def run_quickstart(model: str = "minilm", echo: Callable[[str], None] = print) -> dict:
    """Show the parameter breakdown of `model`, then embed sample sentences and their similarities."""
    encoder = Encoder.from_pretrained(model)
    counts = breakdown(encoder.config)
    echo(format_table(model, encoder.config, counts))
    vectors = embed_texts(encoder, SAMPLE_SENTENCES)
    similarity = cosine_matrix(vectors)
    echo("\ncosine similarity of sample sentences:")
    for i, text in enumerate(SAMPLE_SENTENCES):
        echo(f"  {' '.join(f'{x:5.2f}' for x in similarity[i].tolist())}  {text}")
    return {"params": counts, "similarity": similarity.tolist()}

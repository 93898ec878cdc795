"""Texts and pairs in, scores out: the library functions behind `neuron-encoder classify` and `rerank`.

A model is a models.ResolvedModel (eager, from a checkpoint) or a loaded artifact (runtime.CompiledEncoder,
its head compiled into every bucket); either brings its tokenizer and its task (labels, score function).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch

from .errors import ConfigError
from .task import Task, scores
from .text import Tokenizer, load_tokenizer

Input = Union[str, Sequence[str]]  # a text, or a pair [a, b] in the tokenizer's pair template


def classify(model, inputs: Sequence[Input], *, raw_scores: bool = False, truncate: bool = True,
             direction: str = "right", batch_size: int = 32) -> list[list[dict]]:
    """Every label's score for each input, highest first: [[{"label", "score"}, ...], ...]. Scores as the
    checkpoint says (task.py), the logits with `raw_scores`; a pair over the limit is cut longest-first."""
    run, tokenizer, task = _parts(model, "classify")
    pairs = [_pair_or_text(item) for item in inputs]
    table = scores(_logits(run, tokenizer, pairs, truncate, direction, "longest_first", batch_size), task, raw_scores)
    return [sorted(({"label": task.id2label[i], "score": score} for i, score in enumerate(row)),
                   key=lambda prediction: -prediction["score"]) for row in table.tolist()]


def rerank(model, query: str, texts: Sequence[str], *, raw_scores: bool = False, truncate: bool = True,
           direction: str = "right", batch_size: int = 32) -> list[dict]:
    """Each text's relevance to `query`, highest first: [{"index", "score"}, ...] (`index` into `texts`).
    The pairs (query, text) are cut only_second: the query is never cut, and one that leaves no room for
    its texts is a ShapeError. Needs a reranker (one label), as CrossEncoder.predict scores it."""
    run, tokenizer, task = _parts(model, "rerank")
    if task.kind != "reranker":
        raise ConfigError(f"rerank needs a reranker (one label); this is a classifier with "
                          f"{len(task.id2label)} labels: use classify")
    if not isinstance(query, str) or isinstance(texts, str) or not texts:
        raise ConfigError("rerank takes one query string and a non-empty list of texts")
    pairs = [(query, text) for text in texts]
    column = scores(_logits(run, tokenizer, pairs, truncate, direction, "only_second", batch_size), task,
                    raw_scores)[:, 0]
    return sorted(({"index": i, "score": score} for i, score in enumerate(column.tolist())),
                  key=lambda result: -result["score"])


def _parts(model, command: str) -> tuple:
    """(logits function, tokenizer, task) of a ResolvedModel or a CompiledEncoder; a ConfigError when the
    model embeds instead."""
    encoder = getattr(model, "encoder", model)  # a ResolvedModel holds its encoder; an artifact is one
    task: Task = model.task
    if task.kind == "embedding":
        raise ConfigError(f"this is an embedding model: it cannot {command} (use embed, or a checkpoint saved "
                          "as *ForSequenceClassification)")
    return encoder.logits, load_tokenizer(model), task


def _pair_or_text(item: Input) -> str | tuple[str, str]:
    if isinstance(item, str):
        return item
    if len(item) != 2 or not all(isinstance(text, str) for text in item):
        raise ConfigError(f"an input is a text or a pair of two texts, not {item!r}")
    return tuple(item)


def _logits(run, tokenizer: Tokenizer, inputs: list, truncate: bool, direction: str, strategy: str,
            batch_size: int) -> torch.Tensor:
    if not inputs:
        raise ConfigError("no inputs to score")
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = tokenizer.encode(inputs[start:start + batch_size], truncate=truncate, direction=direction,
                                     strategy=strategy)
            chunks.append(run(*batch.as_tuple()).float())
    return torch.cat(chunks)


def load_scorer(model: str | None = None, artifact: str | Path | None = None):
    """`classify` and `rerank` on the command line: a checkpoint spec, or a compiled artifact directory."""
    if (model is None) == (artifact is None):
        raise ConfigError("pass one of --model (a checkpoint) or --artifact (a compiled directory)")
    if artifact is not None:
        from .runtime import load_compiled
        return load_compiled(artifact)
    from .models import load_model
    resolved = load_model(model)
    if resolved.tokenizer is None:
        raise ConfigError(f"{resolved.model_id} has no tokenizer files, so it cannot score text")
    return resolved

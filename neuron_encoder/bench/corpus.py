"""Sentences per second on a corpus of real texts, the way a batch job embeds them: sorted by length,
cut into batches, each padded only as far as its bucket needs (length-aware batching).

Candidates race pass by pass, interleaved (A, B, A, B, ...), so a busy host slows them alike; the
best pass of each counts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from neuron_encoder.bench.workload import CORPUS
from neuron_encoder.text import Batch, Tokenizer

Pass = Callable[[], None]  # embeds the whole corpus once


def corpus_texts(count: int = 512, seed: int = 0) -> list[str]:
    """`count` texts from the built-in corpus, cycled and shuffled with a fixed seed."""
    rng = random.Random(seed)
    texts = [CORPUS[i % len(CORPUS)] for i in range(count)]
    rng.shuffle(texts)
    return texts


def length_sorted_batches(tokenizer: Tokenizer, texts: Sequence[str], batch_size: int) -> list[Batch]:
    """Texts sorted by token length, in batches of `batch_size`, each padded to its own longest text
    (truncated to the tokenizer's limit): what sentence-transformers' encode does too."""
    lengths = tokenizer.lengths(texts)
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    return [tokenizer.encode([texts[i] for i in order[start:start + batch_size]])
            for start in range(0, len(order), batch_size)]


def model_pass(run: Callable, batches: Sequence[Batch]) -> Pass:
    """One pass of `run` (a model, an artifact) over the batches."""
    def embed_all() -> None:
        with torch.inference_mode():
            for batch in batches:
                run(*batch.as_tuple())
    return embed_all


def sentence_transformers_pass(checkpoint_dir, texts: Sequence[str], batch_size: int = 32) -> Pass | None:
    """sentence-transformers' encode of the same texts (its own length sorting), or None when it is not
    installed (it is a test dependency, not a runtime one)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(str(checkpoint_dir), device="cpu")
    return lambda: model.encode(list(texts), batch_size=batch_size, show_progress_bar=False)


def race(passes: Mapping[str, Pass], sentences: int, repeats: int = 3) -> dict[str, float]:
    """Sentences/s of each candidate: one warm-up pass each (JIT and oneDNN caches), then `repeats`
    rounds, interleaved; the best pass of each counts."""
    for embed_all in passes.values():
        embed_all()
    best = {name: float("inf") for name in passes}
    for _ in range(repeats):
        for name, embed_all in passes.items():
            start = time.perf_counter()
            embed_all()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: sentences / seconds for name, seconds in best.items()}


def padding_efficiency(batches: Sequence[Batch], padded_len: Callable[[int, int], int] | None = None) -> float:
    """Real tokens / tokens computed. padded_len(rows, length) is what a batch really costs (an artifact
    pads to its bucket); default rows x length, as eager runs it."""
    padded_len = padded_len or (lambda rows, length: rows * length)
    real = sum(int(b.attention_mask.sum()) for b in batches)
    return real / sum(padded_len(*b.input_ids.shape) for b in batches)


def bucket_padding(model) -> Callable[[int, int], int]:
    """padded_len for a CompiledEncoder: the tokens its plan for a (rows, length) batch computes."""
    return lambda rows, length: model.shapes.uniform(rows, length).computed_tokens

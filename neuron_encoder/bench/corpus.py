"""Sentences per second on a corpus of real texts, the way a batch job embeds them: sorted by length,
cut into batches, each padded only as far as its bucket needs (length-aware batching)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from neuron_encoder.bench.workload import CORPUS
from neuron_encoder.text import Batch, Tokenizer


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


@dataclass(frozen=True)
class CorpusThroughput:
    sentences: int
    seconds: float  # the best of the repeats, for the whole corpus
    padding_efficiency: float  # real tokens / tokens the model computed (after bucket padding)

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds


def corpus_throughput(run: Callable, batches: Sequence[Batch], padded_len: Callable[[int, int], int] | None = None,
                      repeats: int = 3) -> CorpusThroughput:
    """Time `run` over every batch, `repeats` times after one warm-up pass; the best pass counts.

    padded_len(rows, length) is the token count a batch really costs (a compiled artifact pads to its
    bucket: rows x bucket length); default rows x length, as eager runs it.
    """
    padded_len = padded_len or (lambda rows, length: rows * length)
    real = sum(int(b.attention_mask.sum()) for b in batches)
    padded = sum(padded_len(*b.input_ids.shape) for b in batches)
    best = float("inf")
    with torch.inference_mode():
        for attempt in range(repeats + 1):
            start = time.perf_counter()
            for batch in batches:
                run(*batch.as_tuple())
            if attempt:  # the first pass warms up (JIT profiling, oneDNN primitive caches)
                best = min(best, time.perf_counter() - start)
    return CorpusThroughput(sum(len(b.input_ids) for b in batches), best, real / padded)


def bucket_padding(model) -> Callable[[int, int], int]:
    """padded_len for a CompiledEncoder: the tokens of the buckets a (rows, length) batch is routed to."""
    return lambda rows, length: sum(bucket_batch * bucket_seq for _, bucket_batch, bucket_seq in
                                    model.route(rows, length))


def sentence_transformers_throughput(checkpoint_dir, texts: Sequence[str], batch_size: int = 32,
                                     repeats: int = 3) -> CorpusThroughput | None:
    """sentence-transformers' encode on the same texts (its own length sorting), or None when it is
    not installed (it is a test dependency, not a runtime one)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(str(checkpoint_dir), device="cpu")
    best = float("inf")
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        model.encode(list(texts), batch_size=batch_size)
        if attempt:
            best = min(best, time.perf_counter() - start)
    return CorpusThroughput(len(texts), best, float("nan"))

"""Ties a request to its result (text-embeddings-inference's infer.rs): tokenise texts or check token
ids, enforce the length limit (truncate, or 413 naming both lengths), queue the inputs, await their
vectors, and time each step for the response headers and the metrics.

Tokenization runs on the event loop for small requests (a few tens of microseconds, small lists, no
torch) and on a small thread pool for large ones, so a 256-passage request does not stall the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from neuron_encoder.serve import errors, invocations
from neuron_encoder.serve.batcher import Batcher
from neuron_encoder.serve.metrics import Metrics
from neuron_encoder.errors import NeuronEncoderError
from neuron_encoder.task import EMBEDDING, Task
from neuron_encoder.text import Token, Tokenizer

INLINE_CHARACTERS = 4096  # requests with more characters than this are tokenised off the event loop


@dataclass
class Embedded:
    """A request's vectors (N, H), unnormalised, with its token count and where its time went."""

    vectors: np.ndarray
    tokens: int
    tokenization_s: float
    queue_s: float
    inference_s: float

    def headers(self, start_ns: int) -> list[tuple[bytes, bytes]]:
        """text-embeddings-inference's timing headers, in milliseconds, as ASGI sends them."""
        total = (time.perf_counter_ns() - start_ns) / 1e6
        return [(b"x-total-time", b"%.3f" % total), (b"x-tokenization-time", b"%.3f" % (self.tokenization_s * 1000)),
                (b"x-queue-time", b"%.3f" % (self.queue_s * 1000)),
                (b"x-inference-time", b"%.3f" % (self.inference_s * 1000)), (b"x-compute-tokens", b"%d" % self.tokens)]


class Inference:
    """What the routes call: texts or token ids in, vectors (an embedder's) or logits (a classifier's or
    reranker's: the task decides what the replicas compute) out, through the batcher."""

    def __init__(self, batcher: Batcher, metrics: Metrics, tokenizer: Tokenizer | None, vocab_size: int,
                 auto_truncate: bool, task: Task = EMBEDDING) -> None:
        self.batcher, self.metrics, self.tokenizer, self.task = batcher, metrics, tokenizer, task
        self.vocab_size, self.auto_truncate = vocab_size, auto_truncate
        self.max_length = batcher.table.max_length
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tokenize")

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise errors.TokenizerFailed("this model has no tokenizer (random weights): send token ids to "
                                         "/v1/embeddings instead of text")
        return self.tokenizer

    def need_task(self, *kinds: str) -> Task:
        """The model's task if it is one of `kinds`; else the 424 text-embeddings-inference answers."""
        if self.task.kind not in kinds:
            wanted = " or ".join(f"a {kind}" if kind != "embedding" else "an embedding model" for kind in kinds)
            routes = {"embedding": "/embed, /v1/embeddings", "classifier": "/predict, /classify",
                      "reranker": "/rerank, /v1/rerank, /predict"}[self.task.kind]
            raise errors.WrongTask(f"this route needs {wanted}; the model is "
                                   f"{'an embedding model' if self.task.kind == 'embedding' else 'a ' + self.task.kind}"
                                   f": use {routes}")
        return self.task

    async def _run_tokenizer(self, function, texts: Sequence, *args):
        if sum(len(text) if isinstance(text, str) else sum(map(len, text)) for text in texts) <= INLINE_CHARACTERS:
            return function(texts, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, texts, *args)

    async def embed_texts(self, texts: Sequence[str], truncate: bool | None = None,
                          direction: str = "right") -> Embedded:
        self.need_task("embedding")
        tokenizer = self._need_tokenizer()
        start = time.perf_counter()
        try:
            rows = await self._run_tokenizer(tokenizer.token_ids, texts)
        except Exception as exc:  # the tokenizer's own errors (e.g. a text it cannot take)
            raise errors.TokenizerFailed(f"the tokenizer failed: {exc}") from None
        tokenization = time.perf_counter() - start
        self.metrics.tokenization_duration.observe(tokenization)
        return await self._embed(rows, truncate, direction, tokenization)

    async def embed_ids(self, rows: Sequence[list[int]], truncate: bool | None = None) -> Embedded:
        """Token ids as given (no special tokens added), each id checked against the vocabulary."""
        self.need_task("embedding")
        for number, ids in enumerate(rows):
            bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
            if bad is not None:
                raise errors.Validation(f"input {number}: token id {bad} is outside the vocabulary "
                                        f"(0 to {self.vocab_size - 1})")
        return await self._embed([list(ids) for ids in rows], truncate, "right", 0.0)

    async def score(self, inputs: Sequence[str | tuple[str, str]], truncate: bool | None = None,
                    direction: str = "right", strategy: str = "longest_first") -> Embedded:
        """A classifier's or reranker's logits (N, L) of texts or (a, b) pairs in the tokenizer's pair template.
        Pairs are cut `strategy` (only_second: the query whole; one that leaves no room is a 413); with
        truncation off, an input over the largest bucket is a 413."""
        tokenizer = self._need_tokenizer()
        truncate = self.auto_truncate if truncate is None else truncate
        start = time.perf_counter()
        try:
            rows = await self._run_tokenizer(tokenizer.rows, inputs, self.max_length, truncate, direction.lower(),
                                             strategy)
        except NeuronEncoderError as exc:  # too long (ShapeError: 413)
            raise errors.from_package_error(exc) from None
        except Exception as exc:
            raise errors.TokenizerFailed(f"the tokenizer failed: {exc}") from None
        tokenization = time.perf_counter() - start
        self.metrics.tokenization_duration.observe(tokenization)
        return await self._embed(rows, True, "right", tokenization)

    async def probe(self) -> None:
        """One one-token input through the queue and a replica, whatever the task (the health check)."""
        await self._embed([[0]], True, "right", 0.0)

    async def _embed(self, rows: list[list[int]], truncate: bool | None, direction: str,
                     tokenization_s: float) -> Embedded:
        rows = invocations.fit_rows(rows, self.max_length, self.auto_truncate if truncate is None else truncate,
                                    direction.lower())
        for ids in rows:
            self.metrics.input_length.observe(len(ids))
        pending = self.batcher.submit(rows)
        try:
            vectors = await pending.future
        except asyncio.CancelledError:
            self.batcher.cancel(pending)
            raise
        self.metrics.queue_duration.observe(pending.queue_s)
        return Embedded(vectors, sum(len(ids) for ids in rows), tokenization_s, pending.queue_s, pending.inference_s)

    async def tokenize(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[Token]]:
        tokenizer = self._need_tokenizer()
        return await self._run_tokenizer(tokenizer.tokens, texts, add_special_tokens)

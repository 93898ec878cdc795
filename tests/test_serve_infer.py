"""From inputs to vectors: tokenization, the length limit (truncate or 413 naming both lengths), token
id checks, and the timings a response reports. The replica is a ModelThread that echoes its rows."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from neuron_encoder.serve import errors, infer
from neuron_encoder.serve.batcher import Batcher
from neuron_encoder.serve.packing import BucketTable
from neuron_encoder.shapes import ShapePolicy
from neuron_encoder.serve.infer import Inference
from neuron_encoder.serve.metrics import Metrics
from neuron_encoder.text import Tokenizer
from neuron_encoder.threads import ModelThread
from neuron_encoder.weights import resolve

SEEN: list[list[int]] = []


def echo(replica, rows):
    """Each row's first id, last id and length, so a test can see what was computed."""
    SEEN.extend(rows)
    return np.array([[ids[0], ids[-1], len(ids)] for ids in rows], dtype=np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(resolve("minilm"))


def run(tokenizer, body, auto_truncate=False):
    async def scenario():
        table = BucketTable.build(ShapePolicy([(4, 8), (4, 16)]), 1024)
        batcher = Batcher(table, Metrics(1, lambda: 0, lambda: 0), echo, max_inputs=64)
        batcher.start(asyncio.get_running_loop(), [ModelThread(lambda: None, name="echo-replica")])
        inference = Inference(batcher, batcher.metrics, tokenizer, 30522, auto_truncate)
        try:
            return await body(inference)
        finally:
            batcher.stop()
            inference.close()
    return asyncio.run(scenario())


def test_texts_are_tokenised_with_their_special_tokens(tokenizer):
    result = run(tokenizer, lambda inference: inference.embed_texts(["hello world", "hi"]))
    assert result.vectors.tolist() == [[101, 102, 4], [101, 102, 3]]
    assert result.tokens == 7 and result.queue_s >= 0 and result.inference_s >= 0
    headers = dict(result.headers(start_ns=0))
    assert set(headers) == {b"x-total-time", b"x-tokenization-time", b"x-queue-time", b"x-inference-time",
                            b"x-compute-tokens"} and headers[b"x-compute-tokens"] == b"7"


def test_too_long_is_413_naming_both_lengths_unless_truncated(tokenizer):
    long = "word " * 20  # 22 tokens, the largest bucket is 16
    with pytest.raises(errors.InputTooLong, match="input 1 has 22 tokens, more than the largest compiled bucket .16."):
        run(tokenizer, lambda inference: inference.embed_texts(["short", long]))
    right = run(tokenizer, lambda inference: inference.embed_texts([long], truncate=True))
    assert right.vectors.tolist() == [[101, 102, 16]]  # cut to 16, [CLS] and [SEP] kept
    left = run(tokenizer, lambda inference: inference.embed_texts(["first " + long], True, "Left"))
    assert SEEN[-1][1] == tokenizer.token_ids(["word"])[0][1]  # the beginning went: [CLS] word word ...
    auto = run(tokenizer, lambda inference: inference.embed_texts([long]), auto_truncate=True)
    assert auto.vectors[0, 2] == 16 and left.vectors[0, 2] == 16
    with pytest.raises(errors.InputTooLong):  # a request may still refuse truncation
        run(tokenizer, lambda inference: inference.embed_texts([long], truncate=False), auto_truncate=True)


def test_token_ids_are_checked_against_the_vocabulary(tokenizer):
    result = run(tokenizer, lambda inference: inference.embed_ids([[5, 6, 7]]))
    assert result.vectors.tolist() == [[5, 7, 3]] and result.tokenization_s == 0
    with pytest.raises(errors.Validation, match="input 0: token id 30522 is outside the vocabulary .0 to 30521."):
        run(tokenizer, lambda inference: inference.embed_ids([[5, 30522]]))
    with pytest.raises(errors.Validation, match="token id -1"):
        run(tokenizer, lambda inference: inference.embed_ids([[-1]]))


def test_text_without_a_tokenizer_is_a_tokenizer_error():
    with pytest.raises(errors.TokenizerFailed, match="no tokenizer .random weights.: send token ids"):
        run(None, lambda inference: inference.embed_texts(["x"]))


def test_large_requests_are_tokenised_off_the_event_loop(tokenizer, monkeypatch):
    threads = []
    real = tokenizer.token_ids

    def watched(texts):
        threads.append(threading.current_thread().name)
        return real(texts)

    monkeypatch.setattr(tokenizer, "token_ids", watched)
    run(tokenizer, lambda inference: inference.embed_texts(["short"]))
    run(tokenizer, lambda inference: inference.embed_texts(["x " * 60] * 40, truncate=True))
    assert threads[0] == "MainThread" and threads[1].startswith("tokenize")
    assert infer.INLINE_CHARACTERS < 40 * 120


def test_tokenize_gives_offsets(tokenizer):
    tokens = run(tokenizer, lambda inference: inference.tokenize(["Hi there"], True))
    assert [(t.text, t.start, t.stop) for t in tokens[0]] == [("[CLS]", None, None), ("Hi", 0, 2),
                                                               ("there", 3, 8), ("[SEP]", None, None)]

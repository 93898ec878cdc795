"""The pydantic bodies of the OpenAI and TEI routes, and their answers, with no server."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from neuron_encoder.serve import errors, schemas


def test_openai_accepts_its_four_input_forms():
    parse = lambda body: schemas.openai_inputs(schemas.parse(schemas.OpenAIEmbeddingRequest, body), 8)
    assert parse(b'{"input": "a"}') == (["a"], None)
    assert parse(b'{"input": ["a", "b"], "model": "m", "user": "u"}') == (["a", "b"], None)
    assert parse(b'{"input": [101, 7592, 102]}') == (None, [[101, 7592, 102]])
    assert parse(b'{"input": [[101, 102], [101, 7, 102]]}') == (None, [[101, 102], [101, 7, 102]])
    for bad in (b'{"input": [1, "a"]}', b'{"input": true}', b'{"input": [[]]}', b'{"input": []}',
                b'{"input": "a", "encoding_format": "int8"}', b'{"input": "a", "dimensions": 0}'):
        with pytest.raises(errors.Validation):
            parse(bad)
    with pytest.raises(errors.Validation, match="must be a text, a list of texts, a list of token ids"):
        parse(b'{"input": {"text": "a"}}')


def test_openai_response_float_and_base64():
    vectors = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    body = json.loads(schemas.openai_response(vectors, "minilm", 7, "float"))
    assert body == {"object": "list", "model": "minilm", "usage": {"prompt_tokens": 7, "total_tokens": 7},
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]},
                             {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]}]}
    encoded = json.loads(schemas.openai_response(vectors, "minilm", 7, "base64"))["data"][1]["embedding"]
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == [1.0, 0.0]


def test_tei_bodies():
    embed = schemas.parse(schemas.EmbedRequest, b'{"inputs": "a", "truncation_direction": "Left"}')
    assert embed.truncate is None and embed.normalize and embed.truncation_direction == "Left"
    tokenize = schemas.parse(schemas.TokenizeRequest, b'{"inputs": ["a"], "add_special_tokens": false}')
    assert tokenize.add_special_tokens is False
    with pytest.raises(errors.Validation, match="truncation_direction"):
        schemas.parse(schemas.EmbedRequest, b'{"inputs": "a", "truncation_direction": "middle"}')

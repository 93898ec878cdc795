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


FAST_CASES = {
    schemas.OpenAIEmbeddingRequest: [
        b'{"input": "a"}', b'{"input": ["a", "b"], "model": "m", "user": "u"}', b'{"input": [101, 7592, 102]}',
        b'{"input": [[101, 102], [101, 7, 102]]}', b'{"input": []}', b'{"input": [[]]}', b'{"input": [1, "a"]}',
        b'{"input": true}', b'{"input": [true]}', b'{"input": [1.0]}', b'{"input": [[1], "a"]}',
        b'{"input": {"text": "a"}}', b'{"input": "a", "encoding_format": "base64"}',
        b'{"input": "a", "encoding_format": "int8"}', b'{"input": "a", "dimensions": 0}',
        b'{"input": "a", "dimensions": 3}', b'{"input": "a", "dimensions": true}', b'{"input": "a", "dimensions": 2.0}',
        b'{"input": "a", "model": null, "user": null, "dimensions": null}', b'{"input": "a", "model": 3}',
        b'{"input": [123456789012345678901234567890]}', b'{"model": "m"}', b'{"input": "a", "extra": 1}', b'[]',
        b'"a"', b'null', b'{"input": "a\\ud800"}', b'{"input": NaN}', b'not json'],
    schemas.EmbedRequest: [
        b'{"inputs": "a"}', b'{"inputs": ["a", "b"], "normalize": false, "truncate": null}', b'{"inputs": []}',
        b'{"inputs": "a", "truncation_direction": "Left"}', b'{"inputs": "a", "truncation_direction": "middle"}',
        b'{"inputs": "a", "normalize": 1}', b'{"inputs": "a", "normalize": "yes"}', b'{"inputs": "a", "truncate": 0}',
        b'{"inputs": 3}', b'{"inputs": ["a", 1]}', b'{"inputs": "a", "colour": "red"}', b'{}', b'{"inputs": null}'],
    schemas.TokenizeRequest: [
        b'{"inputs": ["a"], "add_special_tokens": false}', b'{"inputs": "a", "add_special_tokens": null}',
        b'{"inputs": "a", "add_special_tokens": 0}', b'{"inputs": "a"}'],
}


@pytest.mark.parametrize("model, body", [(model, body) for model, bodies in FAST_CASES.items() for body in bodies])
def test_the_fast_checks_accept_only_what_the_model_accepts(model, body):
    """parse_fast skips pydantic for valid bodies: whatever it accepts, the model accepts with the same
    fields, and whatever the model refuses, parse refuses with the model's own message."""
    fast = schemas.parse_fast(model, body)
    try:
        validated = model.model_validate_json(body)
    except Exception:
        validated = None
    if fast is not None:
        assert validated is not None and vars(fast) == validated.model_dump(), body
    if validated is None:
        with pytest.raises((errors.Validation, errors.NotJson)):
            schemas.parse(model, body)


def test_valid_bodies_build_no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built for a valid body")
    monkeypatch.setattr(schemas.OpenAIEmbeddingRequest, "model_validate_json", refuse)
    assert schemas.parse(schemas.OpenAIEmbeddingRequest, b'{"input": ["a"], "model": "m"}').input == ["a"]

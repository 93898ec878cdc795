"""Request parsing and response shaping, with no server: the functions a SageMaker handler calls."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from neuron_encoder.serve import errors, schemas


def test_sagemaker_invocation_contract():
    texts, request = schemas.parse_invocation(b'{"inputs": "one text"}', "application/json")
    assert texts == ["one text"] and request.normalize is True and request.truncate is None
    texts, request = schemas.parse_invocation(b'{"inputs": ["a", "b"], "normalize": false, "truncate": true}',
                                              "application/json; charset=utf-8")
    assert texts == ["a", "b"] and request.normalize is False and request.truncate is True
    pooled = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert json.loads(schemas.invocation_response(pooled)) == [[0.6, 0.8], [1.0, 0.0]]
    assert json.loads(schemas.invocation_response(pooled.numpy(), normalize=False)) == [[3.0, 4.0], [1.0, 0.0]]


@pytest.mark.parametrize("body, content_type, kind, status", [
    (b'{"inputs": "x"}', "text/csv", errors.UnsupportedMediaType, 415),
    (b'{"inputs": "x"}', None, errors.UnsupportedMediaType, 415),
    (b'{"inputs": ["x"] * 3}', "application/json", errors.NotJson, 400),
    (b'{"inputs": ["a", "b", "c"]}', "application/json", errors.TooManyInputs, 413),
    (b'{"inputs": []}', "application/json", errors.Validation, 422),
    (b'{"inputs": "x", "normalize": "false"}', "application/json", errors.Validation, 422),
    (b'{"inputs": "x", "top_k": 3}', "application/json", errors.Validation, 422),
    (b'{"texts": ["x"]}', "application/json", errors.Validation, 422),
    (b'{"inputs": "' + b"x" * 200 + b'"}', "application/json", errors.PayloadTooLarge, 413),
])
def test_bad_invocations_are_errors_with_their_status(body, content_type, kind, status):
    with pytest.raises(kind) as raised:
        schemas.parse_invocation(body, content_type, max_inputs=2, payload_limit=100)
    assert type(raised.value) is kind and raised.value.status == status
    code, rendered = schemas.error_response(raised.value)
    assert code == status and set(json.loads(rendered)) == {"error", "error_type"}


def test_error_response_names_no_internals():
    assert schemas.error_response(KeyError("secret internals")) == (
        500, b'{"error": "internal error; the server log has the details", "error_type": "Backend"}')
    from neuron_encoder.errors import ShapeError
    assert schemas.error_response(ShapeError("too long"))[0] == 413


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


def test_finish_truncates_then_renormalises():
    vectors = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert schemas.finish(vectors, True, 2).tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]
    assert schemas.finish(vectors, False, 2).tolist() == [[3.0, 4.0]]
    with pytest.raises(errors.Validation, match="dimensions 4 is more than the model's 3"):
        schemas.finish(vectors, True, 4)
    assert schemas.finish(np.zeros((1, 3), dtype=np.float32), True).tolist() == [[0.0, 0.0, 0.0]]  # no NaN


def test_float32_values_survive_the_json_round_trip_exactly():
    vectors = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    back = np.array(json.loads(schemas.embeddings_json(vectors)), dtype=np.float32)
    assert np.array_equal(back, vectors)


def test_tei_bodies():
    embed = schemas.parse(schemas.EmbedRequest, b'{"inputs": "a", "truncation_direction": "Left"}')
    assert embed.truncate is None and embed.normalize and embed.truncation_direction == "Left"
    tokenize = schemas.parse(schemas.TokenizeRequest, b'{"inputs": ["a"], "add_special_tokens": false}')
    assert tokenize.add_special_tokens is False
    with pytest.raises(errors.Validation, match="truncation_direction"):
        schemas.parse(schemas.EmbedRequest, b'{"inputs": "a", "truncation_direction": "middle"}')

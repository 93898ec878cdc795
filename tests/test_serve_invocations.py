"""SageMaker's /invocations contract and the JSON every route shares, without pydantic or a server: what
the server's routes and the SageMaker handler (deploy/sagemaker/inference.py) both call."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from neuron_encoder.serve import errors, invocations, schemas
from neuron_encoder.serve.invocations import Invocation


def test_sagemaker_invocation_contract():
    assert invocations.parse_invocation(b'{"inputs": "one text"}', "application/json") == Invocation(["one text"])
    assert invocations.parse_invocation(b'{"inputs": ["a", "b"], "normalize": false, "truncate": true}',
                                        "application/json; charset=utf-8") == Invocation(["a", "b"], False, True)
    pooled = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    answer = lambda normalize: json.loads(invocations.embeddings_json(invocations.finish(pooled, normalize)))
    assert answer(True) == [[0.6, 0.8], [1.0, 0.0]] and answer(False) == [[3.0, 4.0], [1.0, 0.0]]


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
        invocations.parse_invocation(body, content_type, max_inputs=2, payload_limit=100)
    assert type(raised.value) is kind and raised.value.status == status
    served = errors.as_serve_error(raised.value)
    assert served.status == status and set(json.loads(served.body())) == {"error", "error_type"}


def test_finish_truncates_then_renormalises():
    vectors = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert invocations.finish(vectors, True, 2).tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]
    assert invocations.finish(vectors, False, 2).tolist() == [[3.0, 4.0]]
    with pytest.raises(errors.Validation, match="dimensions 4 is more than the model's 3"):
        invocations.finish(vectors, True, 4)
    assert invocations.finish(np.zeros((1, 3), dtype=np.float32), True).tolist() == [[0.0, 0.0, 0.0]]  # no NaN


def test_float32_values_survive_the_json_round_trip_exactly():
    vectors = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    back = np.array(json.loads(invocations.embeddings_json(vectors)), dtype=np.float32)
    assert np.array_equal(back, vectors)


@pytest.mark.parametrize("body", [
    b'{"inputs": "x"}', b'{"inputs": ["a", "b"]}', b'{"inputs": "x", "normalize": false, "truncate": null}',
    b'{"inputs": "x", "truncate": true}', b'{"inputs": "x", "normalize": 1}', b'{"inputs": "x", "truncate": "no"}',
    b'{"inputs": 3}', b'{"inputs": ["a", 1]}', b'{"inputs": "x", "extra": 1}', b'{}', b'["x"]', b'"x"', b'null',
    b'{"inputs": null}', b'{"inputs": {"a": 1}}',
])
def test_the_openapi_schema_and_the_parser_agree(body):
    """InvocationRequest documents /invocations in the OpenAPI schema; parse_invocation parses it without
    pydantic: both must accept and refuse the same bodies."""
    try:
        schemas.InvocationRequest.model_validate_json(body)
        documented = True
    except ValidationError:
        documented = False
    try:
        invocations.parse_invocation(body, "application/json")
        parsed = True
    except errors.Validation:
        parsed = False
    assert parsed == documented

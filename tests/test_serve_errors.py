"""Errors as data: each failure has its status and TEI error type, rendered the same way everywhere."""

from __future__ import annotations

import json

import pytest

from neuron_encoder.errors import ArtifactError, ConfigError, ShapeError
from neuron_encoder.serve import errors


@pytest.mark.parametrize("error, status, kind", [
    (errors.Validation("x"), 422, "Validation"),
    (errors.NotJson("x"), 400, "Validation"),
    (errors.UnsupportedMediaType("x"), 415, "Validation"),
    (errors.PayloadTooLarge("x"), 413, "Validation"),
    (errors.TooManyInputs("x"), 413, "Validation"),
    (errors.InputTooLong("x"), 413, "Validation"),
    (errors.TokenizerFailed("x"), 422, "Tokenizer"),
    (errors.Unauthorized(), 401, "Unauthorized"),
    (errors.Overloaded("x"), 429, "Overloaded"),
    (errors.QueueTimeout("x"), 503, "Overloaded"),
    (errors.Unhealthy("x"), 503, "Unhealthy"),
    (errors.Draining("x"), 503, "Unhealthy"),
    (errors.BackendFailed("x"), 424, "Backend"),
    (errors.Internal("x"), 500, "Backend"),
])
def test_each_failure_has_its_status_and_type(error, status, kind):
    assert (error.status, error.error_type) == (status, kind)
    assert json.loads(error.body()) == {"error": error.message, "error_type": kind}


def test_refusals_carry_their_counter_reason_and_headers():
    assert errors.Overloaded("full").headers == {"Retry-After": "1"} and errors.Overloaded("full").reason == "queue_full"
    assert errors.Unauthorized().headers == {"WWW-Authenticate": "Bearer"}
    assert {errors.TooManyInputs("x").reason, errors.InputTooLong("x").reason, errors.QueueTimeout("x").reason,
            errors.Draining("x").reason} == {"too_many_inputs", "input_too_long", "queue_timeout", "draining"}
    assert errors.Validation("x").reason is None  # a bad body is not a refusal


def test_package_errors_map_to_http_in_one_place():
    assert isinstance(errors.from_package_error(ShapeError("too long")), errors.InputTooLong)
    assert isinstance(errors.from_package_error(ConfigError("bad")), errors.Validation)
    backend = errors.from_package_error(ArtifactError("gone"))
    assert backend.status == 424 and backend.message == "ArtifactError: gone"


def test_any_exception_becomes_a_serve_error_that_names_no_internals():
    served = errors.as_serve_error(KeyError("secret internals"))
    assert (served.status, served.body()) == (
        500, b'{"error": "internal error; the server log has the details", "error_type": "Backend"}')
    assert errors.as_serve_error(ShapeError("too long")).status == 413
    refusal = errors.Overloaded("full")
    assert errors.as_serve_error(refusal) is refusal

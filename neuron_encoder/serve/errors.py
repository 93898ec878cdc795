"""Errors as data: one type per way a request can fail, each with its HTTP status and its
text-embeddings-inference error type, rendered once as {"error": "...", "error_type": "..."}.

The package's own exception family (neuron_encoder.errors) maps onto these in `from_package_error`,
and any exception at all in `as_serve_error`: the one place an error becomes an HTTP answer. A body never carries a stack trace.
"""

from __future__ import annotations

import json

from neuron_encoder.errors import ConfigError, NeuronEncoderError, ShapeError


class ServeError(Exception):
    """A request that cannot be answered with a result; subclasses fix the status and the type."""

    status = 500
    error_type = "Backend"
    reason: str | None = None  # the label of the rejected-requests counter, for refusals that count

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> bytes:
        return json.dumps({"error": self.message, "error_type": self.error_type}).encode()


class Validation(ServeError):
    """A body that does not match the route's schema (wrong types, unknown fields, empty inputs)."""

    status = 422
    error_type = "Validation"


class NotJson(Validation):
    status = 400


class UnsupportedMediaType(ServeError):
    status = 415
    error_type = "Validation"


class PayloadTooLarge(ServeError):
    """A body over --payload-limit."""

    status = 413
    error_type = "Validation"
    reason = "payload_too_large"


class TooManyInputs(PayloadTooLarge):
    """More inputs in one request than --max-client-batch-size."""

    reason = "too_many_inputs"


class InputTooLong(PayloadTooLarge):
    """An input longer than the largest compiled bucket, without truncation."""

    reason = "input_too_long"


class TokenizerFailed(ServeError):
    """Text sent to a model without a tokenizer, or text the tokenizer cannot take."""

    status = 422
    error_type = "Tokenizer"


class Unauthorized(ServeError):
    status = 401
    error_type = "Unauthorized"

    def __init__(self, message: str = "a valid API key is required: send 'Authorization: Bearer <key>'") -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class NotFound(ServeError):
    status = 404
    error_type = "NotFound"


class MethodNotAllowed(ServeError):
    status = 405
    error_type = "Validation"


class Overloaded(ServeError):
    """The queue holds --max-concurrent-requests inputs already: refused at once, try again soon."""

    status = 429
    error_type = "Overloaded"
    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class QueueTimeout(ServeError):
    """Waited longer than --request-timeout-ms for a replica; not computed."""

    status = 503
    error_type = "Overloaded"
    reason = "queue_timeout"


class Unhealthy(ServeError):
    """Not ready yet (loading, warming up), or draining after SIGTERM."""

    status = 503
    error_type = "Unhealthy"
    reason = "unhealthy"


class Draining(Unhealthy):
    reason = "draining"


class BackendFailed(ServeError):
    """The model raised on a batch: that batch fails, the server carries on."""

    status = 424
    error_type = "Backend"


class WrongTask(BackendFailed):
    """A route of another task: embeddings asked of a classifier or reranker, scores of an embedder, a
    rerank of a classifier (424 with TEI's Backend type, as text-embeddings-inference answers it)."""


class Internal(ServeError):
    """A bug: the body says only that; the log has the traceback."""

    status = 500
    error_type = "Backend"


def from_package_error(error: NeuronEncoderError) -> ServeError:
    """The HTTP answer for one of the package's own errors (the CLI maps the same family to exit codes)."""
    if isinstance(error, ShapeError):
        return InputTooLong(str(error))
    if isinstance(error, ConfigError):
        return Validation(str(error))
    return BackendFailed(f"{type(error).__name__}: {error}")


def as_serve_error(error: Exception) -> ServeError:
    """ServeErrors as themselves, the package's errors mapped, anything else a 500 that names no internals."""
    if isinstance(error, ServeError):
        return error
    if isinstance(error, NeuronEncoderError):
        return from_package_error(error)
    return Internal("internal error; the server log has the details")

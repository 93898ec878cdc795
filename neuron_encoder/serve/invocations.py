"""The JSON every route shares, with nothing but the standard library, numpy and our token-id helpers: the
media type, a list of inputs, rows fitted to the largest bucket, SageMaker's /invocations body, embeddings
as JSON, and errors as JSON.

The server's routes and the handler for AWS's own inference containers (deploy/sagemaker/inference.py)
both call these, so a SageMaker endpoint answers exactly as `neuron-encoder serve` does; those
containers are not guaranteed pydantic or a web framework, so nothing here needs them.
The /invocations contract: application/json {"inputs": str | [str], "normalize": bool = true,
"truncate": bool | null = null}; a single string is one input; unknown fields are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuron_encoder.serve import errors
from neuron_encoder.text import cut

try:  # the server's extra has orjson; a bare SageMaker container may not, and gets the same JSON
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None

JSON = "application/json"
INVOCATION_FIELDS = ("inputs", "normalize", "truncate")


@dataclass(frozen=True)
class Invocation:
    texts: list[str]
    normalize: bool = True
    truncate: bool | None = None  # None: the server's --auto-truncate (the handler's default: refuse)


def check_media_type(content_type: str | None) -> None:
    """415 unless the body is declared application/json (parameters such as charset are fine)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != JSON:
        raise errors.UnsupportedMediaType(f"content type {content_type or 'none'!r} is not supported: "
                                          f"send {JSON}")


def as_list(inputs: str | list, max_inputs: int) -> list:
    """A single input as a list of one; an empty list is a 422, more than max_inputs a 413."""
    items = [inputs] if isinstance(inputs, str) else inputs
    if not items:
        raise errors.Validation("inputs cannot be empty")
    if len(items) > max_inputs:
        raise errors.TooManyInputs(f"{len(items)} inputs in one request; at most {max_inputs} "
                                   "(--max-client-batch-size)")
    return items


def input_too_long(number: int, length: int, limit: int) -> errors.InputTooLong:
    """The 413 for an input longer than the largest compiled bucket, worded once for the server and the handler."""
    return errors.InputTooLong(
        f"input {number} has {length} tokens, more than the largest compiled bucket ({limit}); "
        "send truncate=true, start the server with --auto-truncate, or compile a longer bucket")


def fit_rows(rows: list[list[int]], limit: int, truncate: bool, direction: str = "right") -> list[list[int]]:
    """Token-id rows within the largest bucket: cut when truncating, else a 413 naming both lengths
    (the server's request path and the SageMaker handler alike)."""
    for number, ids in enumerate(rows):
        if len(ids) > limit:
            if not truncate:
                raise input_too_long(number, len(ids), limit)
            rows[number] = cut(ids, limit, direction)
    return rows


def parse_invocation(body: bytes | str, content_type: str | None, max_inputs: int = 32,
                     payload_limit: int | None = None) -> Invocation:
    """A SageMaker /invocations body -> Invocation; a ServeError (415, 413, 400, 422) otherwise."""
    return invocation(read_json(body, content_type, payload_limit), max_inputs)


def read_json(body: bytes | str, content_type: str | None, payload_limit: int | None = None) -> Any:
    """A whole body's JSON value, after its media type (415) and size (413); 400 if it is not JSON."""
    check_media_type(content_type)
    if payload_limit is not None and len(body) > payload_limit:
        raise too_large(payload_limit)
    return loads(body)


def too_large(limit: int) -> errors.PayloadTooLarge:
    """The 413 for a body over --payload-limit: the server's streaming read and a whole body alike."""
    return errors.PayloadTooLarge(f"the body is larger than the limit of {limit} bytes (--payload-limit)")


def invocation(value: Any, max_inputs: int = 32) -> Invocation:
    """A parsed /invocations body (a JSON value) of an embedder -> Invocation; a ServeError (422, 413) otherwise."""
    if not isinstance(value, dict):
        raise errors.Validation('body: must be a JSON object with "inputs"')
    unknown = sorted(set(value) - set(INVOCATION_FIELDS))
    if unknown:
        # worded as pydantic words it on the other routes, so every route refuses a field alike
        raise errors.Validation("; ".join(f"{name}: Extra inputs are not permitted" for name in unknown))
    inputs = value.get("inputs")
    if not (isinstance(inputs, str) or isinstance(inputs, list) and all(isinstance(t, str) for t in inputs)):
        raise errors.Validation("inputs: must be a text or a list of texts")
    normalize, truncate = value.get("normalize", True), value.get("truncate")
    if not isinstance(normalize, bool):
        raise errors.Validation("normalize: must be true or false")
    if truncate is not None and not isinstance(truncate, bool):
        raise errors.Validation("truncate: must be true, false or null")
    return Invocation(as_list(inputs, max_inputs), normalize, truncate)


def loads(body: bytes | str) -> Any:
    """A JSON body's value (orjson's parser when there is one); 400 for text that is not JSON. What orjson
    alone refuses (NaN, integers past 64 bits) is the standard library's to judge, as before orjson."""
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise errors.NotJson("the body is not valid JSON") from None


def finish(vectors: np.ndarray, normalize: bool, dimensions: int | None = None) -> np.ndarray:
    """Pooled vectors (N, H) as a client asked for them: the first `dimensions` values, then L2-normalised
    when asked (Matryoshka-style truncation, as OpenAI's `dimensions`)."""
    if dimensions is not None:
        if dimensions > vectors.shape[1]:
            raise errors.Validation(f"dimensions {dimensions} is more than the model's {vectors.shape[1]}")
        vectors = vectors[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def dumps(value: Any) -> bytes:
    """JSON bytes; numpy arrays become nested lists (orjson writes float32 in its shortest form)."""
    if orjson is not None:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(value, default=lambda a: a.tolist()).encode()


def embeddings_json(vectors: np.ndarray) -> bytes:
    """[[float, ...], ...]: one embedding per input, in order (TEI's /embed, SageMaker's /invocations)."""
    return dumps(np.ascontiguousarray(vectors, dtype=np.float32))

